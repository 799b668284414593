// `saekit eval`: the SAE spliced into the model on a corpus: CE loss clean / spliced /
// zero-ablated, CE loss recovered, KL, and the reconstruction metrics. A transcoder reads its
// hook and its prediction replaces its output hook (--hook-out, else its cfg's hook_name_out).
import { ValidationError } from '../../errors.js';
import { loadSaeFromFlags, saeSourceFlags, saeSourceUsage } from '../saeFlags.js';
import { evaluateSpliced } from '../../model/splice.js';
import { applyThreads, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeContextSize, saeHook, saePrependBos } from '../modelFlags.js';
import { progressBar } from '../progress.js';

export const evalUsage =
  `saekit eval ${modelUsage} ${saeSourceUsage} --text CORPUS [--hook H] [--hook-out H] [--tokens 4096] [--context-size N] [--no-bos] [--text-field text] [--batch-size 4] [--json] [--device D] [--threads N]`;

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
  });
  const text = required(values, 'text');
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
    const m = await evaluateSpliced(model, sae, {
      hook,
      ...(values['hook-out'] !== undefined && { hookOut: values['hook-out'] as string }),
      corpus: text,
      contextSize: saeContextSize(values, sae, 128, model),
      tokens: num(values, 'tokens', 'int', 1) ?? 4096,
      prependBos: saePrependBos(values, sae),
      ...(values['text-field'] !== undefined && { textField: values['text-field'] as string }),
      ...(values['batch-size'] !== undefined && { batchSize: num(values, 'batch-size', 'int', 1) }),
      onProgress: (p) => bar.update(p),
    });
    bar.stop();
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ model: model.name, sae: saeDir, hook, ...m }, null, 2)}\n`);
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
        `  L0                     ${m.l0.toFixed(2)}`,
      ].join('\n') + '\n',
    );
    return 0;
  } finally {
    bar.stop();
    sae.dispose();
    await model.dispose();
  }
}
