import { addon } from '../../addon.js';
import { backends, cpuVariant, threads } from '../../system.js';
import { parse } from '../args.js';
import { loadTransformers } from '../../model/languageModel.js';
import { hubCacheDir } from '../../hub/hub.js';

export const doctorUsage = 'saekit doctor';

/** What this installation can run: backends, CPU kernel variant, threads, CUDA or why not. */
export async function doctorCommand(argv: string[]): Promise<number> {
  parse(argv, {});
  addon();
  const v = cpuVariant();
  const lines = [
    `saekit doctor`,
    `  node ${process.version} (${process.platform}-${process.arch})`,
    `  kernel threads: ${threads()}${process.env.SAEKIT_THREADS ? ' (SAEKIT_THREADS)' : ''}`,
    `  CPU kernels: ${v.current} (best ${v.best}; supported ${v.supported.join(', ')})${process.env.SAEKIT_ISA ? ' (SAEKIT_ISA)' : ''}`,
    `  exact screened topk encode (bf16 screen + fp32 rescoring): ${
      v.bf16Screening
        ? process.env.SAEKIT_SCREEN === '0'
          ? 'available, turned off by SAEKIT_SCREEN=0'
          : `on (with the avx512 kernels${v.current === 'avx512' ? '' : `; the ${v.current} variant is forced, so it does not run`})`
        : 'unavailable (needs AVX512-BF16)'
    }`,
  ];
  for (const b of backends()) lines.push(`  backend ${b.name}: ${b.available ? 'available' : 'unavailable'}: ${b.detail}`);
  if (!backends().some((b) => b.name === 'cuda')) lines.push('  backend cuda: not compiled (no nvcc at build time, or SAEKIT_CPU_ONLY=1)');
  try {
    const tf = await loadTransformers();
    lines.push(`  model side: @huggingface/transformers ${tf.env.version} (ONNX runtime, CPU)`);
  } catch {
    lines.push('  model side: unavailable (optional @huggingface/transformers not installed; needed by activations/features/eval/generate)');
  }
  lines.push(`  hub cache: ${hubCacheDir()}${process.env.HF_HUB_OFFLINE ? ' (offline)' : ''}; endpoint ${process.env.HF_ENDPOINT ?? 'https://huggingface.co'}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
