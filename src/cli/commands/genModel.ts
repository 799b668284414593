// `saekit gen-model`: writes a small GPT-2-architecture model with random weights (ONNX,
// torch-style node names, GPT-2's real tokenizer) in Hugging Face layout. It is what the
// tests, the demo and the benchmarks run the model side on, offline.
import { gpt2TokenizerFiles } from '../../model/gpt2Tokenizer.js';
import { writeTinyGpt2 } from '../../model/tinyGpt2.js';
import { num, parse, required } from '../args.js';

export const genModelUsage = 'saekit gen-model --output DIR [--layers 2] [--d-model 64] [--heads 4] [--positions 256] [--no-past] [--seed 1]';

export async function genModelCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, { output: str, layers: str, 'd-model': str, heads: str, positions: str, 'no-past': { type: 'boolean' }, seed: str });
  const output = required(values, 'output');
  const t0 = performance.now();
  const w = await writeTinyGpt2(output, {
    layers: num(values, 'layers', 'int', 1) ?? 2,
    dModel: num(values, 'd-model', 'int', 1) ?? 64,
    heads: num(values, 'heads', 'int', 1) ?? 4,
    nPositions: num(values, 'positions', 'int', 1) ?? 256,
    withPast: values['no-past'] !== true,
    seed: num(values, 'seed', 'int') ?? 1,
    tokenizerFiles: { ...(await gpt2TokenizerFiles()) },
  });
  const c = w.config;
  process.stderr.write(
    `wrote a GPT-2-architecture model (${c.layers} layers, d_model ${c.dModel}, ${c.heads} heads, vocab ${c.vocabSize}, random weights) ` +
      `to ${output} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  return 0;
}
