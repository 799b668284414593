// `saekit feature`: the seed's single-feature view in the terminal: the contexts that make one
// feature fire most, each token shaded by the feature's value.
import { analyzeFeatures } from '../../analysis/analyze.js';
import { ValidationError } from '../../errors.js';
import { loadSaeFromFlags, saeSourceFlags } from '../saeFlags.js';
import { applyThreads, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { loadModelFromFlags, modelFlags, modelUsage, saeContextSize, saeHook, saePrependBos } from '../modelFlags.js';

export const featureUsage = `saekit feature ${modelUsage} (--sae DIR | --release R --sae-id ID) --text CORPUS --id N [--tokens 20000] [--top 10] [--hook H] [--context-size N] [--no-bos] [--text-field F]`;

export async function featureCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, { ...commonFlags, ...modelFlags, ...saeSourceFlags, 'sae-id': str, text: str, 'text-field': str, id: str, tokens: str, top: str, hook: str, 'context-size': str, 'no-bos': { type: 'boolean' } });
  const text = required(values, 'text');
  const id = num(values, 'id', 'int');
  if (id === undefined) throw new ValidationError('missing required flag --id');
  const top = num(values, 'top', 'int', 1) ?? 10;
  applyThreads(values);
  const { sae, label: saeDir, entry } = await loadSaeFromFlags(values, 'sae-id');
  try {
    if (id >= sae.dSae) throw new ValidationError(`--id ${id} is out of range: ${saeDir} has d_sae ${sae.dSae}`);
    const model = await loadModelFromFlags(values, entry);
    try {
      const hook = saeHook(values, sae, saeDir);
      const r = await analyzeFeatures(
        sae,
        {
          kind: 'corpus',
          model,
          hook,
          corpus: text,
          ...(values['text-field'] !== undefined && { textField: values['text-field'] as string }),
          tokens: num(values, 'tokens', 'int', 1) ?? 20_000,
          contextSize: saeContextSize(values, sae, 128, model),
          prependBos: saePrependBos(values, sae),
        },
        {
          stats: { dSae: sae.dSae, topN: top, contextLeft: 12, contextRight: 4, reservoir: 1 },
          ...(model.tokenizer.bosId !== undefined && { ignoreTokens: new Set([model.tokenizer.bosId]) }),
        },
      );
      const s = r.stats;
      const count = s.countOf(id);
      const say = (line: string) => process.stdout.write(`${line}\n`);
      say(
        `feature ${id} of ${saeDir} at ${hook}: fired on ${count} of ${s.tokensSeen} tokens (${((100 * count) / s.tokensSeen).toFixed(3)}%), ` +
          `max ${s.maxOf(id).toFixed(3)}, mean ${(count > 0 ? s.sumOf(id) / count : 0).toFixed(3)}`,
      );
      const color = process.stdout.isTTY === true && !process.env.NO_COLOR;
      const max = s.maxOf(id) || 1;
      for (const [i, e] of s.top(id).entries()) {
        const parts = e.tokenIds.map((tid, j) => {
          const t = JSON.stringify(model.tokenText(tid)).slice(1, -1);
          const v = e.values[j]!;
          if (color) {
            const a = Math.max(0, Math.min(1, v / max));
            const g = Math.round(255 - 135 * a);
            const b = Math.round(255 - 255 * a);
            return v > 0 ? `\x1b[48;2;255;${g};${b}m\x1b[30m${t}\x1b[0m` : t;
          }
          return j === e.at ? `[[${t}]]` : v > 0 ? `[${t}]` : t;
        });
        say(`${String(i + 1).padStart(3)}. ${e.value.toFixed(3).padStart(8)}  ${parts.join('')}`);
      }
      if (count === 0) say('  (the feature did not fire on this text)');
      return 0;
    } finally {
      await model.dispose();
    }
  } finally {
    sae.dispose();
  }
}
