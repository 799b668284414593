// Gemma Scope: one params.npz per SAE holding W_enc [d_model, d_sae], W_dec [d_sae, d_model],
// b_enc, b_dec and threshold. JumpReLU, and b_dec is NOT subtracted from the input. There is
// no config file: sizes come from W_enc, and nothing records the model or hook.

import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { readNpz, type NpzArrayRead } from './npz.js';
import { checkFinite, expectShape } from './saeTensors.js';

const NPY_DTYPE_NAMES: Readonly<Record<string, string>> = { '<f4': 'float32', '<f2': 'float16', '<f8': 'float64' };

/**
 * ALIASES (lower-cased array name -> saekit's name) widens the names accepted, for files whose
 * publisher spelled them otherwise (SAELens's Gemma Scope transcoder loader accepts several);
 * two arrays that mean the same tensor are refused by name.
 */
export async function readGemmaScope(npzFile: string, aliases?: Readonly<Record<string, string>>): Promise<SaeWeights> {
  const raw = await readNpz(npzFile);
  // Some copies spell the matrices w_enc / w_dec (SAELens' loader maps them the same way).
  const arrays = new Map<string, NpzArrayRead>();
  const from = new Map<string, string>();
  for (const [name, a] of Object.entries(raw)) {
    const canonical = (aliases && Object.hasOwn(aliases, name.toLowerCase()) ? aliases[name.toLowerCase()] : undefined) ?? name.replace(/^w_/, 'W_');
    if (from.has(canonical)) throw new FormatError(npzFile, `arrays '${from.get(canonical)}' and '${name}' both name ${canonical}`);
    from.set(canonical, name);
    arrays.set(canonical, a);
  }
  const get = (name: string): NpzArrayRead => {
    const a = arrays.get(name);
    if (a) return a;
    throw new FormatError(npzFile, `no array '${name}' (arrays: ${[...from.values()].join(', ') || 'none'})`);
  };
  const encShape = get('W_enc').shape;
  if (encShape.length !== 2) throw new FormatError(npzFile, `array 'W_enc' has shape [${encShape.join(', ')}], expected [d_model, d_sae]`);
  const [dIn, dSae] = encShape as [number, number];
  const because = `W_enc is [d_model ${dIn}, d_sae ${dSae}]`;
  const weight = (name: string, shape: number[]): Float32Array => {
    const a = get(name);
    if (!Object.hasOwn(NPY_DTYPE_NAMES, a.dtype)) throw new FormatError(npzFile, `array '${name}' has dtype ${a.dtype}; SAE weights must be floats`);
    expectShape(npzFile, name, a.shape, shape, because);
    checkFinite(npzFile, name, a.data, shape);
    return a.data;
  };
  // Vectors as numpy leaves them: [n], or a kept batch axis [1, n]; a threshold may be one
  // number for every latent ([] or [1], as SAELens broadcasts a scalar threshold).
  const vector = (name: string, n: number, scalarOk: boolean): Float32Array => {
    const a = get(name);
    const s = a.shape;
    if (scalarOk && (s.length === 0 || (s.length === 1 && s[0] === 1)) && n !== 1) {
      const v = weight(name, [...s]);
      return new Float32Array(n).fill(v[0]!);
    }
    if (s.length === 2 && s[0] === 1) return weight(name, [1, n]);
    return weight(name, [n]);
  };
  const W_enc = weight('W_enc', [dIn, dSae]);
  const b_enc = vector('b_enc', dSae, false);
  const W_dec = weight('W_dec', [dSae, dIn]);
  const b_dec = vector('b_dec', dIn, false);
  const threshold = vector('threshold', dSae, true);
  return {
    config: {
      architecture: 'jumprelu',
      dIn,
      dSae,
      applyBDecToInput: false,
      normalizeActivations: 'none',
      dtype: NPY_DTYPE_NAMES[get('W_dec').dtype]!,
      format: 'gemmascope',
      metadata: {},
    },
    W_enc,
    encTransposed: false,
    b_enc,
    W_dec,
    b_dec,
    threshold,
  };
}
