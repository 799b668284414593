// `saekit generate`: greedy continuation of a prompt, optionally with SAE feature
// interventions spliced in at the SAE's hook (ablate, clamp, or steer along a decoder row); a
// transcoder's edited prediction goes to its output hook (--hook-out, else its hook_name_out).
import { ValidationError } from '../../errors.js';
import { generate, parseIntervention } from '../../model/splice.js';
import type { Sae } from '../../sae.js';
import type { ReleaseEntry } from '../../hub/registry.js';
import { loadSaeFromFlags, saeSourceFlags } from '../saeFlags.js';
import { applyThreads, commonFlags, deviceFlag, num, parse } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeHook, saePrependBos } from '../modelFlags.js';

export const generateUsage =
  `saekit generate ${modelUsage} [--sae DIR [--hook H] [--hook-out H] --intervene ablate:F|clamp:F=V|steer:F=S ...] [--max-new-tokens 20] [--no-bos] "prompt"`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      ...commonFlags,
      ...modelFlags,
      ...saeSourceFlags,
      hook: { type: 'string' },
      'hook-out': { type: 'string' },
      intervene: { type: 'string', multiple: true },
      'max-new-tokens': { type: 'string' },
      'no-bos': { type: 'boolean' },
    },
    true,
  );
  const prompt = positionals.join(' ');
  if (prompt === '') throw new ValidationError('Give the prompt as the last argument');
  const specs = (values.intervene as string[] | undefined) ?? [];
  if (specs.length > 0 && values.sae === undefined && values.release === undefined) throw new ValidationError('--intervene needs --sae (or --release)');
  applyThreads(values);
  let sae: Sae | undefined;
  let entry: ReleaseEntry | undefined;
  if (values.sae !== undefined || values.release !== undefined) ({ sae, entry } = await loadSaeFromFlags(values));
  try {
    const model = await loadModelFromFlags(values, entry);
    try {
      const hook = sae ? saeHook(values, sae, (values.sae ?? values.release) as string) : undefined;
      const interventions = sae ? specs.map((s) => parseIntervention(s, sae!.dSae)) : [];
      const maxNewTokens = num(values, 'max-new-tokens', 'int', 1) ?? 20;
      const prependBos = saePrependBos(values, sae);
      const promptTokens = model.tokenizer.encode(prompt).length + (prependBos ? 1 : 0);
      const limit = model.maxPositions;
      if (limit !== undefined && promptTokens + maxNewTokens > limit) {
        process.stderr.write(`prompt (${promptTokens} tokens) + ${maxNewTokens} new tokens exceed the ${limit} positions of model ${model.name}: each step reads the last ${limit}\n`);
      }
      const out = await generate(model, prompt, { maxNewTokens, prependBos, ...(sae && { sae, hook, interventions }), ...(values['hook-out'] !== undefined && { hookOut: values['hook-out'] as string }) });
      process.stdout.write(`${prompt}${out.text}\n`);
      return 0;
    } finally {
      await model.dispose();
    }
  } finally {
    sae?.dispose();
  }
}
