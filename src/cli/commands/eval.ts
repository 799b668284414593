// `saekit eval`: the SAE spliced into the model on a corpus: CE loss clean / spliced /
// zero-ablated, CE loss recovered, KL, and the reconstruction metrics. A transcoder reads its
// hook and its prediction replaces its output hook (--hook-out, else its cfg's hook_name_out).
// --output FILE.json writes every metric in SAEBench's core eval shape (src/model/coreEval.ts).
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ValidationError } from '../../errors.js';
import { coreEvalOutput, writeJsonFile } from '../../model/coreEval.js';
import { saekitVersion, threads } from '../../system.js';
import { loadSaeFromFlags, saeSourceFlags, saeSourceUsage } from '../saeFlags.js';
import { evaluateSpliced } from '../../model/splice.js';
import { applyThreads, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeContextSize, saeHook, saePrependBos } from '../modelFlags.js';
import { progressBar } from '../progress.js';

export const evalUsage =
  `saekit eval ${modelUsage} ${saeSourceUsage} --text CORPUS [--hook H] [--hook-out H] [--tokens 4096] [--context-size N] [--no-bos] [--text-field text] [--batch-size 4] [--json] [--output FILE.json] [--device D] [--threads N]`;

export async function evalCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, {
    ...commonFlags,
    ...modelFlags,
    ...saeSourceFlags,
    text: str,
    hook: str,
    'hook-out': str,
    tokens: str,
    'context-size': str,
    'no-bos': { type: 'boolean' },
    'text-field': str,
    'batch-size': str,
    json: { type: 'boolean' },
    output: str,
  });
  const text = required(values, 'text');
  const output = values.output as string | undefined;
  if (output !== undefined) {
    // Checked before the (long) evaluation: a missing folder would only show at the write.
    const dir = dirname(resolve(output));
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ValidationError(`--output ${output}: folder ${dir} does not exist`);
    if (existsSync(output) && statSync(output).isDirectory()) throw new ValidationError(`--output ${output} is a folder: give a file name, e.g. ${output}/core_eval.json`);
  }
  applyThreads(values);
  const { sae, label: saeDir, entry } = await loadSaeFromFlags(values);
  const model = await loadModelFromFlags(values, entry).catch((e: unknown) => {
    sae.dispose();
    throw e;
  });
  const bar = progressBar('eval', 'batch');
  try {
    const hook = saeHook(values, sae, saeDir);
    model.checkHook(hook);
    if (sae.dIn !== model.dModel) throw new ValidationError(`${saeDir} has d_in ${sae.dIn} but ${hook} of ${model.name} has width ${model.dModel}`);
    const contextSize = saeContextSize(values, sae, 128, model);
    const tokens = num(values, 'tokens', 'int', 1) ?? 4096;
    const prependBos = saePrependBos(values, sae);
    const batchSize = num(values, 'batch-size', 'int', 1) ?? 4;
    const textField = values['text-field'] as string | undefined;
    const m = await evaluateSpliced(model, sae, {
      hook,
      ...(values['hook-out'] !== undefined && { hookOut: values['hook-out'] as string }),
      corpus: text,
      contextSize,
      tokens,
      prependBos,
      ...(textField !== undefined && { textField }),
      batchSize,
      onProgress: (p) => bar.update(p),
    });
    bar.stop();
    if (output !== undefined) {
      const { metadata: _metadata, ...config } = sae.config;
      await writeJsonFile(
        output,
        coreEvalOutput(m, {
          model: model.name,
          hook,
          sae: saeDir,
          contextSize,
          tokensRequested: tokens,
          batchSizePrompts: batchSize,
          prependBos,
          corpus: text,
          ...(textField !== undefined && { textField }),
          device: sae.device,
          threads: threads(),
          saekitVersion: saekitVersion(),
          saeConfig: config,
          ...(values.release !== undefined && { release: values.release as string, saeId: values.id as string | undefined }),
        }),
      );
      process.stderr.write(`core eval (SAEBench shape) -> ${output}\n`);
    }
    const { featureFired: _fired, featureWindows: _windows, ...scalars } = m;
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ model: model.name, sae: saeDir, hook, ...scalars }, null, 2)}\n`);
      return 0;
    }
    const f = (x: number) => x.toFixed(4);
    process.stdout.write(
      [
        m.hook_out !== undefined
          ? `${model.name} ${hook} -> ${m.hook_out}, transcoder ${saeDir}: ${m.tokens} tokens (${m.windows} windows)`
          : `${model.name} ${hook}, SAE ${saeDir}: ${m.tokens} tokens (${m.windows} windows)`,
        `  CE loss clean          ${f(m.ce_loss_clean)}`,
        `  CE loss with SAE       ${f(m.ce_loss_with_sae)}`,
        `  CE loss zero-ablated   ${f(m.ce_loss_with_ablation)}`,
        `  CE loss recovered      ${(100 * m.ce_loss_score).toFixed(2)}%`,
        `  KL(clean || SAE)       ${f(m.kl_div_with_sae)}`,
        `  KL(clean || ablated)   ${f(m.kl_div_with_ablation)}`,
        `  explained variance     ${(100 * m.explained_variance).toFixed(2)}%   (FVU ${f(m.fvu)}, MSE ${m.mse.toExponential(3)})`,
        `  cosine, L2 ratio       ${f(m.cossim)}, ${f(m.l2_ratio)}   (relative reconstruction bias ${f(m.relative_reconstruction_bias)})`,
        `  L0, L1                 ${m.l0.toFixed(2)}, ${m.l1.toFixed(3)}`,
      ].join('\n') + '\n',
    );
    return 0;
  } finally {
    bar.stop();
    sae.dispose();
    await model.dispose();
  }
}
