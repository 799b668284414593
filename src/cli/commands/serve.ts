// `saekit serve`: the HTTP API of src/serve/server.ts for an SAE (and optionally a model and a
// dashboard folder), on localhost unless --host says otherwise. Ctrl-C closes it cleanly.
import { createSaeServer } from '../../serve/server.js';
import { applyThreads, commonFlags, num, parse } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeHook, saePrependBos } from '../modelFlags.js';
import { loadSaeFromFlags, saeSourceFlags, saeSourceUsage } from '../saeFlags.js';
import type { LanguageModel } from '../../model/languageModel.js';

export const serveUsage =
  `saekit serve ${saeSourceUsage} [${modelUsage}] [--hook H] [--no-bos] [--dashboard DASHDIR] [--port 8080] [--host 127.0.0.1] ` +
  '[--max-batch-rows 4096] [--max-rows 1024] [--max-body-mb 16] [--max-concurrent 256] [--batch-window-ms 1] [--max-text-chars 20000] ' +
  "[--cors-origin '*'|ORIGIN|none] [--device D] [--threads N]";

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...commonFlags,
    ...saeSourceFlags,
    ...modelFlags,
    hook: { type: 'string' },
    'no-bos': { type: 'boolean' },
    dashboard: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    'max-batch-rows': { type: 'string' },
    'max-rows': { type: 'string' },
    'max-body-mb': { type: 'string' },
    'max-concurrent': { type: 'string' },
    'batch-window-ms': { type: 'string' },
    'max-text-chars': { type: 'string' },
    'cors-origin': { type: 'string' },
  });
  const port = num(values, 'port', 'int') ?? 8080;
  const maxBodyMb = num(values, 'max-body-mb', 'float', 0.001);
  const limits = {
    maxBatchRows: num(values, 'max-batch-rows', 'int', 1),
    maxRowsPerRequest: num(values, 'max-rows', 'int', 1),
    maxBodyBytes: maxBodyMb === undefined ? undefined : Math.round(maxBodyMb * 1024 * 1024),
    maxConcurrent: num(values, 'max-concurrent', 'int', 1),
    batchWindowMs: num(values, 'batch-window-ms', 'float', 0),
    maxTextChars: num(values, 'max-text-chars', 'int', 1),
  };
  const cors = values['cors-origin'] as string | undefined;
  applyThreads(values);
  const { sae, label } = await loadSaeFromFlags(values);
  let model: LanguageModel | undefined;
  try {
    if (values.model !== undefined) model = await loadModelFromFlags(values);
    const hook = model ? saeHook(values, sae, label) : ((values.hook as string | undefined) ?? sae.config.hookName);
    const server = await createSaeServer({
      sae,
      ...(model && { model }),
      ...(hook !== undefined && { hook }),
      prependBos: saePrependBos(values, sae),
      saeLabel: label,
      ...(values.dashboard !== undefined && { dashboardDir: values.dashboard as string }),
      ...(values.host !== undefined && { host: values.host as string }),
      port,
      ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
      ...(cors !== undefined && { corsOrigin: cors === 'none' ? null : cors }),
    });
    const what = [`SAE ${label} (d_in ${sae.dIn}, d_sae ${sae.dSae})`, model ? `model ${model.name} at ${hook}` : 'no model', values.dashboard !== undefined ? `dashboard ${values.dashboard as string}` : ''];
    process.stdout.write(`saekit serve: listening at ${server.url} (${what.filter((s) => s !== '').join(', ')}; Ctrl-C stops)\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await server.close();
    const s = server.stats();
    process.stderr.write(`saekit serve: stopped after ${s.requests} encode requests (${s.rows} rows) in ${s.calls} encode calls\n`);
    return 0;
  } finally {
    sae.dispose();
    await model?.dispose();
  }
}
