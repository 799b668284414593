// An SAE that reconstructs exactly, for splicing tests: standard ReLU with W_enc = [I, -I],
// W_dec = [I; -I], so decode(encode(x)) = relu(x) - relu(-x) = x.
import { createSae, type Sae } from '../../src/sae.js';
import type { SaeWeights } from '../../src/types.js';

export async function identitySae(d: number, hook: string): Promise<Sae> {
  const W_enc = new Float32Array(d * 2 * d);
  const W_dec = new Float32Array(2 * d * d);
  for (let i = 0; i < d; i++) {
    W_enc[i * 2 * d + i] = 1;
    W_enc[i * 2 * d + d + i] = -1;
    W_dec[i * d + i] = 1;
    W_dec[(d + i) * d + i] = -1;
  }
  const w: SaeWeights = {
    config: { architecture: 'standard', dIn: d, dSae: 2 * d, applyBDecToInput: false, normalizeActivations: 'none', dtype: 'float32', format: 'generated', hookName: hook, metadata: {} },
    W_enc,
    encTransposed: false,
    b_enc: new Float32Array(2 * d),
    W_dec,
    b_dec: new Float32Array(d),
  };
  return createSae(w, { device: 'cpu' });
}
