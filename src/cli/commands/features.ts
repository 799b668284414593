// `saekit features`: the seed's walk-through. Per token of a text, the SAE features that fire
// most at the SAE's hook, with their values.
import { ValidationError } from '../../errors.js';
import { tokenFeatures } from '../../analysis/tokenFeatures.js';
import { loadSaeFromFlags, saeSourceFlags, saeSourceUsage } from '../saeFlags.js';
import { applyThreads, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeHook, saePrependBos } from '../modelFlags.js';

export const featuresUsage = `saekit features ${modelUsage} ${saeSourceUsage} [--hook H] [--top 5] [--no-bos] [--json] [--device D] [--threads N] "some text"`;

export type { TokenFeatures } from '../../analysis/tokenFeatures.js';

export async function featuresCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { ...commonFlags, ...modelFlags, ...saeSourceFlags, hook: { type: 'string' }, top: { type: 'string' }, 'no-bos': { type: 'boolean' }, json: { type: 'boolean' } },
    true,
  );
  const text = positionals.join(' ');
  if (text.trim() === '') throw new ValidationError('Give the text to read as the last argument, e.g. saekit features --model M --sae DIR "The king ruled"');
  const top = num(values, 'top', 'int', 1) ?? 5;
  applyThreads(values);
  const { sae, label: saeDir, entry } = await loadSaeFromFlags(values);
  const model = await loadModelFromFlags(values, entry).catch((e: unknown) => {
    sae.dispose();
    throw e;
  });
  try {
    const hook = saeHook(values, sae, saeDir);
    model.checkHook(hook);
    if (sae.dIn !== model.dModel) throw new ValidationError(`${saeDir} has d_in ${sae.dIn} but ${hook} of ${model.name} has width ${model.dModel}`);
    const { tokens: rows, truncatedFrom } = await tokenFeatures(model, sae, hook, text, { top, prependBos: saePrependBos(values, sae) });
    if (truncatedFrom !== undefined)
      process.stderr.write(`the text's ${truncatedFrom} tokens exceed the ${model.maxPositions} positions of model ${model.name}: reading the first ${model.maxPositions}\n`);
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ model: model.name, sae: saeDir, hook, tokens: rows }, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`${model.name} ${hook}, SAE ${saeDir} (d_sae ${sae.dSae}): top ${top} features per token\n`);
    const width = Math.min(16, Math.max(...rows.map((r) => JSON.stringify(r.text).length)));
    for (const r of rows) {
      const feats = r.features.map((f) => `${f.id}:${f.value.toFixed(2)}`).join('  ');
      process.stdout.write(`${String(r.position).padStart(4)} ${JSON.stringify(r.text).padEnd(width)} ${feats || '(none)'}\n`);
    }
    return 0;
  } finally {
    sae.dispose();
    await model.dispose();
  }
}
