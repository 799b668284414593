import { loadSaeFromFlags, saeSourceFlags } from '../saeFlags.js';
import { decodeFile } from '../../stream/decodeFile.js';
import { applyThreads, commonFlags, deviceFlag, parse, required } from '../args.js';
import { progressBar } from '../progress.js';

export const decodeUsage = 'saekit decode --sae DIR --codes CODES.safetensors --output OUT.npy [--device auto|cpu|cuda] [--threads N]';

export async function decodeCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...commonFlags,
    ...saeSourceFlags,
    codes: { type: 'string' },
    output: { type: 'string' },
    'chunk-rows': { type: 'string' },
  });
  const codes = required(values, 'codes');
  const output = required(values, 'output');
  applyThreads(values);
  const { sae } = await loadSaeFromFlags(values);
  const bar = progressBar('decode');
  try {
    const r = await decodeFile(sae, codes, output, {
      ...(values['chunk-rows'] ? { chunkRows: Number(values['chunk-rows']) } : {}),
      onProgress: (p) => bar.update(p),
    });
    bar.stop();
    process.stderr.write(`decoded ${r.rows} rows -> ${output} (float32 [${r.rows}, ${sae.dIn}]), ${r.seconds.toFixed(2)} s\n`);
    return 0;
  } finally {
    bar.stop();
    sae.dispose();
  }
}
