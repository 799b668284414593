import { addon } from '../../addon.js';
import { backends, cpuVariant, resolveDevice, threads, type CpuVariantInfo } from '../../system.js';
import { parse } from '../args.js';
import { loadTransformers } from '../../model/languageModel.js';
import { hubCacheDir } from '../../hub/hub.js';

export const doctorUsage = 'saekit doctor';

/** The screen in use for SAEs loaded now (SAEKIT_SCREEN), and what else this CPU runs. */
function screenLine(v: CpuVariantInfo): string {
  const also = `this CPU runs: ${v.screens.length > 0 ? v.screens.join(', ') : 'none (needs AVX512-BF16, AVX512-VNNI or AVX-VNNI)'}; default ${v.bestScreen}`;
  const env = process.env.SAEKIT_SCREEN;
  if (v.screenError) return `error: ${v.screenError} (${also})`;
  if (v.screen === 'off') return `off${env ? ` (SAEKIT_SCREEN=${env})` : ''} (${also})`;
  const isa = v.screen === 'int8-256' ? v.current === 'avx512' || v.current === 'avx2' : v.current === 'avx512';
  const approx = process.env.SAEKIT_SCREEN_APPROX === '1' ? '; APPROXIMATE mode (SAEKIT_SCREEN_APPROX=1): topk values unrescored' : '';
  return `${v.screen} screen + fp32 rescoring${env ? ` (SAEKIT_SCREEN=${env})` : ''}${isa ? '' : `, but the ${v.current} CPU variant is forced, so it does not run`}${approx} (${also})`;
}

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
    `  exact screened topk/jumprelu encode: ${screenLine(v)}`,
  ];
  for (const b of backends()) lines.push(`  backend ${b.name}: ${b.available ? 'available' : 'unavailable'}: ${b.detail}`);
  if (!backends().some((b) => b.name === 'cuda')) lines.push('  backend cuda: not compiled (no nvcc at build time, or SAEKIT_CPU_ONLY=1)');
  lines.push(`  --device auto: ${resolveDevice('auto')} for encode/decode (training: cpu)`);
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
