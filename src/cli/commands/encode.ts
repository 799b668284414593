import { loadSaeFromFlags, saeSourceFlags, saeSourceUsage } from '../saeFlags.js';
import { encodeFile } from '../../stream/encodeFile.js';
import { applyThreads, commonFlags, deviceFlag, parse, required } from '../args.js';
import { progressBar } from '../progress.js';

export const encodeUsage =
  `saekit encode ${saeSourceUsage} --input FILE [--tensor NAME] --output OUT.safetensors [--device auto|cpu|cuda] [--threads N] [--chunk-rows N]`;

export async function encodeCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...commonFlags,
    ...saeSourceFlags,
    input: { type: 'string' },
    tensor: { type: 'string' },
    output: { type: 'string' },
    'chunk-rows': { type: 'string' },
  });
  const input = required(values, 'input');
  const output = required(values, 'output');
  applyThreads(values);
  const { sae } = await loadSaeFromFlags(values);
  const bar = progressBar('encode');
  try {
    const r = await encodeFile(sae, input, output, {
      ...(values.tensor ? { tensor: values.tensor as string } : {}),
      ...(values['chunk-rows'] ? { chunkRows: Number(values['chunk-rows']) } : {}),
      onProgress: (p) => bar.update(p),
    });
    bar.stop();
    process.stderr.write(
      `encoded ${r.rows} rows -> ${output}: ${r.nnz} nonzeros (L0 ${(r.nnz / Math.max(1, r.rows)).toFixed(2)}), ` +
        `${r.seconds.toFixed(2)} s, ${Math.round(r.rows / r.seconds)} tokens/s on ${sae.device}\n`,
    );
    return 0;
  } finally {
    bar.stop();
    sae.dispose();
  }
}
