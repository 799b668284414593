import { isTranscoder } from '../../types.js';
import { existsSync } from 'node:fs';
import { UsageError } from '../../errors.js';
import { pullSae, readPretrainedWeights } from '../../hub/pretrained.js';
import { isRelease } from '../../hub/registry.js';
import { readSaeDir } from '../../formats/saeDir.js';
import { cpuVariant } from '../../system.js';
import { parse } from '../args.js';
import { cltTargetFlag } from '../saeFlags.js';

export const infoUsage = 'saekit info DIR | saekit info RELEASE --id ID [--registry FILE] [--clt-target LAYER|sum]';

/** Prints the SAE's normalized config as JSON (weights are read to validate them). */
export async function infoCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { id: { type: 'string' }, registry: { type: 'string' }, offline: { type: 'boolean' }, 'clt-target': { type: 'string' } }, true);
  if (positionals.length !== 1) throw new UsageError(`usage: ${infoUsage}`);
  const name = positionals[0]!;
  const registry = values.registry as string | undefined;
  const cltTarget = cltTargetFlag(values);
  const read = cltTarget !== undefined ? { cltTarget } : {};
  // A pretrained release is pulled (or found in the cache) first, and read by its release's format.
  const w =
    !existsSync(name) && isRelease(name, registry)
      ? await readPretrainedWeights(await pullSae(name, values.id as string | undefined, { ...(registry !== undefined && { registry }), ...(values.offline === true && { offline: true }) }), read)
      : await readSaeDir(name, read);
  if (cltTarget !== undefined && w.config.metadata['clt_target'] === undefined) throw new UsageError(`--clt-target is for cross-layer transcoders, and ${name} is not one`);
  const c = w.config;
  const weightBytes = 4 * (w.W_enc.length + w.W_dec.length + w.b_enc.length + w.b_dec.length + (w.threshold?.length ?? 0) + (w.W_skip?.length ?? 0));
  // What it is: an SAE reconstructs its hook; a transcoder predicts hookNameOut (d_out wide),
  // a skip transcoder adds x @ W_skip^T.
  const kind = w.W_skip ? 'skip transcoder' : isTranscoder(c, false) ? 'transcoder' : 'sae';
  // The exact screened encode (topk/jumprelu, CPUs with a screen) keeps more copies of W_enc
  // once a screen is chosen: the screen's low-precision panels (bf16 pairs, or int8 quads plus
  // a scale and a column sum per latent) and an fp32 latent-major copy for rescoring. The
  // kernel is measured at the first encode ('auto'; the bf16 size is the upper bound) unless
  // SAEKIT_ENCODE_KERNEL forces one.
  const v = cpuVariant();
  const screening = (c.architecture === 'topk' || c.architecture === 'jumprelu') && v.kernels.length > 1;
  const kernel = !screening ? 'fp32' : v.encodeKernel;
  const panels = Math.ceil(c.dSae / 32) * 32;
  const lowPrecision = kernel === 'fp32' ? 0 : kernel === 'int8' || kernel === 'int8-256' ? panels * (Math.ceil(c.dIn / 4) + 2) * 4 : panels * Math.ceil(c.dIn / 32) * 16 * 4;
  const screeningBytes = kernel === 'fp32' ? 0 : lowPrecision + 4 * c.dSae * c.dIn + 2 * 4 * panels;
  const screen = kernel === 'fp32' ? 'off' : kernel;
  // How saekit trained it, where it says so (matryoshka and batchtopk both load as jumprelu).
  const widths = c.metadata['matryoshka_widths'];
  const trainedAs = Array.isArray(widths) ? { trainedAs: 'matryoshka batch top-k', matryoshkaWidths: widths } : {};
  process.stdout.write(`${JSON.stringify({ kind, ...trainedAs, ...c, dOut: c.dOut ?? c.dIn, weightBytesFloat32: weightBytes, encodeKernel: kernel, screen, screeningBytes }, null, 2)}\n`);
  return 0;
}
