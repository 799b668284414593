// Shared fixtures for the formats tests: temp directories, a seeded RNG, SAEs with random
// weights, a float64 reference of the SAE math, and a few files written by numpy itself
// (embedded as base64) so the readers are checked against the real writer, not only ours.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Architecture, SaeWeights } from '../../src/types.js';

/** Creates temp directories and removes them all in cleanup(). */
export function tempDirs(): { make: () => Promise<string>; cleanup: () => Promise<void> } {
  const made: string[] = [];
  return {
    make: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'saekit-formats-'));
      made.push(dir);
      return dir;
    },
    cleanup: async () => {
      await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

/** Names in `dir` that look like leftover temporary files or staging directories. */
export async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.includes('.tmp-'));
}

/** mulberry32: small, fast, good enough for test data; fixed seeds keep failures reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomFloat32(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

export function randomWeights(architecture: Architecture, dIn: number, dSae: number, seed: number, k = 3): SaeWeights {
  const r = rng(seed);
  const w: SaeWeights = {
    config: {
      architecture,
      dIn,
      dSae,
      ...(architecture === 'topk' && { k }),
      applyBDecToInput: true,
      normalizeActivations: 'none',
      dtype: 'float32',
      format: 'generated',
      hookName: 'blocks.1.hook_resid_pre',
      modelName: 'tiny-model',
      metadata: { context_size: 128, prepend_bos: true },
    },
    W_enc: randomFloat32(dIn * dSae, r),
    encTransposed: false,
    b_enc: randomFloat32(dSae, r, 0.1),
    W_dec: randomFloat32(dSae * dIn, r),
    b_dec: randomFloat32(dIn, r, 0.1),
  };
  if (architecture === 'jumprelu') w.threshold = randomFloat32(dSae, r, 0.05).map(Math.abs);
  return w;
}

/**
 * Float64 reference of encode for one row (no normalization), FORMATS.md math. `decoderNormScale`
 * reproduces SAELens' rescale_acts_by_decoder_norm (hidden_pre * ||W_dec[j]|| before top-k).
 * Top-k ties: lower latent index wins.
 */
export function encodeRef(w: SaeWeights, x: ArrayLike<number>, decoderNormScale = false): Float64Array {
  const { dIn, dSae, architecture, k, applyBDecToInput } = w.config;
  const pre = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let s = w.b_enc[j]!;
    for (let i = 0; i < dIn; i++) {
      const xi = x[i]! - (applyBDecToInput ? w.b_dec[i]! : 0);
      const wij = w.encTransposed ? w.W_enc[j * dIn + i]! : w.W_enc[i * dSae + j]!;
      s += xi * wij;
    }
    pre[j] = decoderNormScale ? s * rowNorm(w.W_dec, j, dIn) : s;
  }
  const f = new Float64Array(dSae);
  if (architecture === 'topk') {
    const order = [...pre.keys()].sort((a, b) => pre[b]! - pre[a]! || a - b).slice(0, k);
    for (const j of order) f[j] = Math.max(0, pre[j]!);
  } else {
    for (let j = 0; j < dSae; j++) {
      const keep = architecture === 'standard' || pre[j]! > w.threshold![j]!;
      f[j] = keep ? Math.max(0, pre[j]!) : 0;
    }
  }
  return f;
}

/** Float64 decode; `decoderNormScale` divides codes by ||W_dec[j]|| first (SAELens' rescale). */
export function decodeRef(w: SaeWeights, f: Float64Array, decoderNormScale = false): Float64Array {
  const { dIn, dSae } = w.config;
  const out = Float64Array.from(w.b_dec);
  for (let j = 0; j < dSae; j++) {
    if (f[j] === 0) continue;
    const a = decoderNormScale ? f[j]! / rowNorm(w.W_dec, j, dIn) : f[j]!;
    for (let i = 0; i < dIn; i++) out[i] += a * w.W_dec[j * dIn + i]!;
  }
  return out;
}

export function rowNorm(m: Float32Array, row: number, cols: number): number {
  let s = 0;
  for (let c = 0; c < cols; c++) s += m[row * cols + c]! ** 2;
  return Math.sqrt(s);
}

export function fromBase64(b64: string): Uint8Array {
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/**
 * Arrays in the numpy fixtures below (np.savez of these, d_in 3, d_sae 4):
 *   W_enc = (arange(12).reshape(3, 4) - 5) / 8, W_dec = (arange(12).reshape(4, 3) - 6) / 4,
 *   b_enc = [0.5, -0.25, 0.125, 1], b_dec = [1, 2, -3], threshold = [0.1, 0.2, 0.3, 0.4].
 */
export const NUMPY_ARRAYS: Record<string, { shape: number[]; data: number[] }> = {
  W_enc: { shape: [3, 4], data: Array.from({ length: 12 }, (_, i) => (i - 5) / 8) },
  W_dec: { shape: [4, 3], data: Array.from({ length: 12 }, (_, i) => (i - 6) / 4) },
  b_enc: { shape: [4], data: [0.5, -0.25, 0.125, 1] },
  b_dec: { shape: [3], data: [1, 2, -3] },
  threshold: { shape: [4], data: [0.1, 0.2, 0.3, 0.4] },
};

/** np.save of np.array([[1, -2.5, 65504], [6e-8, inf, 0.333]], dtype=float16). */
export const NUMPY_F16_BITS = [15360, 49408, 31743, 1, 31744, 13652];

// np.savez (stored members), np.savez_compressed (deflate), and np.savez with zipfile's
// ZIP64_LIMIT forced to 0 (zip64 end record and zip64 extra fields, as for > 4 GiB archives).
export const NUMPY_SAVEZ_B64 =
  'UEsDBC0AAAAAAAAAIQByDOFs//////////8JABQAV19lbmMubnB5AQAQALAAAAAAAAAAsAAAAAAAAACTTlVNUFkBAHYAeydk' +
  'ZXNjcic6ICc8ZjQnLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoMywgNCksIH0gICAgICAgICAgICAgICAg' +
  'ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgCgAAIL8AAAC/AADAvgAAgL4AAAC+AAAAAAAAAD4A' +
  'AIA+AADAPgAAAD8AACA/AABAP1BLAwQtAAAAAAAAACEANBQBQ///////////CQAUAFdfZGVjLm5weQEAEACwAAAAAAAAALAA' +
  'AAAAAAAAk05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDQsIDMp' +
  'LCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAMC/AACgvwAA' +
  'gL8AAEC/AAAAvwAAgL4AAAAAAACAPgAAAD8AAEA/AACAPwAAoD9QSwMELQAAAAAAAAAhAAn6luf//////////wkAFABiX2Vu' +
  'Yy5ucHkBABAAkAAAAAAAAACQAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxmNCcsICdmb3J0cmFuX29yZGVyJzogRmFs' +
  'c2UsICdzaGFwZSc6ICg0LCksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg' +
  'ICAgICAgICAKAAAAPwAAgL4AAAA+AACAP1BLAwQtAAAAAAAAACEAVyX4PP//////////CQAUAGJfZGVjLm5weQEAEACMAAAA' +
  'AAAAAIwAAAAAAAAAk05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzog' +
  'KDMsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAIA/' +
  'AAAAQAAAQMBQSwMELQAAAAAAAAAhAB2B+33//////////w0AFAB0aHJlc2hvbGQubnB5AQAQAJAAAAAAAAAAkAAAAAAAAACT' +
  'TlVNUFkBAHYAeydkZXNjcic6ICc8ZjQnLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoNCwpLCB9ICAgICAg' +
  'ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgCs3MzD3NzEw+mpmZPs3MzD5Q' +
  'SwECLQMtAAAAAAAAACEAcgzhbLAAAACwAAAACQAAAAAAAAAAAAAAgAEAAAAAV19lbmMubnB5UEsBAi0DLQAAAAAAAAAhADQU' +
  'AUOwAAAAsAAAAAkAAAAAAAAAAAAAAIAB6wAAAFdfZGVjLm5weVBLAQItAy0AAAAAAAAAIQAJ+pbnkAAAAJAAAAAJAAAAAAAA' +
  'AAAAAACAAdYBAABiX2VuYy5ucHlQSwECLQMtAAAAAAAAACEAVyX4PIwAAACMAAAACQAAAAAAAAAAAAAAgAGhAgAAYl9kZWMu' +
  'bnB5UEsBAi0DLQAAAAAAAAAhAB2B+32QAAAAkAAAAA0AAAAAAAAAAAAAAIABaAMAAHRocmVzaG9sZC5ucHlQSwUGAAAAAAUA' +
  'BQAXAQAANwQAAAAA';

export const NUMPY_SAVEZ_COMPRESSED_B64 =
  'UEsDBC0AAAAIAAAAIQByDOFs//////////8JABQAV19lbmMubnB5AQAQALAAAAAAAAAAaAAAAAAAAACb7BfqGxDJyFDGUK2e' +
  'klqcXKRupaBuk2airqOgnpZfVFKUmBefX5SSChJ3S8wpTgWKF2ckFqQC+RrGOgommjoKtQpkAy4GBoX9DAwMQHxgHwNDAxAz' +
  'gDAI2AH5QHwAiBnsgeqA2MEeAFBLAwQtAAAACAAAACEANBQBQ///////////CQAUAFdfZGVjLm5weQEAEACwAAAAAAAAAGcA' +
  'AAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNmoq6joJ6WX1RSlJgXn1+UkgoSd0vMKU4FihdnJBakAvkaJjoKxpo6CrUK' +
  'ZAMuBoYD+xkYFgBxAxA7ADEDiL2PAQwa7ICEPVAciBuAeIE9AFBLAwQtAAAACAAAACEACfqW5///////////CQAUAGJfZW5j' +
  'Lm5weQEAEACQAAAAAAAAAFIAAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNmoq6joJ6WX1RSlJgXn1+UkgoSd0vMKU4F' +
  'ihdnJBakAvkaJjqaOgq1ChQALgYGBnsGhoZ9QNoOSNsDAFBLAwQtAAAACAAAACEAVyX4PP//////////CQAUAGJfZGVjLm5w' +
  'eQEAEACMAAAAAAAAAE8AAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNmoq6joJ6WX1RSlJgXn1+UkgoSd0vMKU4Fihdn' +
  'JBakAvkaxjqaOgq1ChQALgaGBnsGBgYHIDoAAFBLAwQtAAAACAAAACEAHYH7ff//////////DQAUAHRocmVzaG9sZC5ucHkB' +
  'ABAAkAAAAAAAAABUAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqKuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQW' +
  'pAL5GiY6mjoKtQoUAK6zZ87Ynj3jYzdr5kw7INsOAFBLAQItAy0AAAAIAAAAIQByDOFsaAAAALAAAAAJAAAAAAAAAAAAAACA' +
  'AQAAAABXX2VuYy5ucHlQSwECLQMtAAAACAAAACEANBQBQ2cAAACwAAAACQAAAAAAAAAAAAAAgAGjAAAAV19kZWMubnB5UEsB' +
  'Ai0DLQAAAAgAAAAhAAn6ludSAAAAkAAAAAkAAAAAAAAAAAAAAIABRQEAAGJfZW5jLm5weVBLAQItAy0AAAAIAAAAIQBXJfg8' +
  'TwAAAIwAAAAJAAAAAAAAAAAAAACAAdIBAABiX2RlYy5ucHlQSwECLQMtAAAACAAAACEAHYH7fVQAAACQAAAADQAAAAAAAAAA' +
  'AAAAgAFcAgAAdGhyZXNob2xkLm5weVBLBQYAAAAABQAFABcBAADvAgAAAAA=';

export const NUMPY_SAVEZ_ZIP64_B64 =
  'UEsDBC0AAAAAAAAAIQByDOFs//////////8JABQAV19lbmMubnB5AQAQALAAAAAAAAAAsAAAAAAAAACTTlVNUFkBAHYAeydk' +
  'ZXNjcic6ICc8ZjQnLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoMywgNCksIH0gICAgICAgICAgICAgICAg' +
  'ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgCgAAIL8AAAC/AADAvgAAgL4AAAC+AAAAAAAAAD4A' +
  'AIA+AADAPgAAAD8AACA/AABAP1BLAwQtAAAAAAAAACEANBQBQ///////////CQAUAFdfZGVjLm5weQEAEACwAAAAAAAAALAA' +
  'AAAAAAAAk05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDQsIDMp' +
  'LCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAMC/AACgvwAA' +
  'gL8AAEC/AAAAvwAAgL4AAAAAAACAPgAAAD8AAEA/AACAPwAAoD9QSwMELQAAAAAAAAAhAAn6luf//////////wkAFABiX2Vu' +
  'Yy5ucHkBABAAkAAAAAAAAACQAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxmNCcsICdmb3J0cmFuX29yZGVyJzogRmFs' +
  'c2UsICdzaGFwZSc6ICg0LCksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg' +
  'ICAgICAgICAKAAAAPwAAgL4AAAA+AACAP1BLAwQtAAAAAAAAACEAVyX4PP//////////CQAUAGJfZGVjLm5weQEAEACMAAAA' +
  'AAAAAIwAAAAAAAAAk05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzog' +
  'KDMsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAIA/' +
  'AAAAQAAAQMBQSwMELQAAAAAAAAAhAB2B+33//////////w0AFAB0aHJlc2hvbGQubnB5AQAQAJAAAAAAAAAAkAAAAAAAAACT' +
  'TlVNUFkBAHYAeydkZXNjcic6ICc8ZjQnLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoNCwpLCB9ICAgICAg' +
  'ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgCs3MzD3NzEw+mpmZPs3MzD5Q' +
  'SwECLQMtAAAAAAAAACEAcgzhbP//////////CQAUAAAAAAAAAAAAgAEAAAAAV19lbmMubnB5AQAQALAAAAAAAAAAsAAAAAAA' +
  'AABQSwECLQMtAAAAAAAAACEANBQBQ///////////CQAcAAAAAAAAAAAAgAH/////V19kZWMubnB5AQAYALAAAAAAAAAAsAAA' +
  'AAAAAADrAAAAAAAAAFBLAQItAy0AAAAAAAAAIQAJ+pbn//////////8JABwAAAAAAAAAAACAAf////9iX2VuYy5ucHkBABgA' +
  'kAAAAAAAAACQAAAAAAAAANYBAAAAAAAAUEsBAi0DLQAAAAAAAAAhAFcl+Dz//////////wkAHAAAAAAAAAAAAIAB/////2Jf' +
  'ZGVjLm5weQEAGACMAAAAAAAAAIwAAAAAAAAAoQIAAAAAAABQSwECLQMtAAAAAAAAACEAHYH7ff//////////DQAcAAAAAAAA' +
  'AAAAgAH/////dGhyZXNob2xkLm5weQEAGACQAAAAAAAAAJAAAAAAAAAAaAMAAAAAAABQSwYGLAAAAAAAAAAtAC0AAAAAAAAA' +
  'AAAFAAAAAAAAAAUAAAAAAAAAmwEAAAAAAAA3BAAAAAAAAFBLBgcAAAAA0gUAAAAAAAABAAAAUEsFBgAAAAAFAAUAmwEAADcE' +
  'AAAAAA==';

export const NUMPY_F16_NPY_B64 =
  'k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAg' +
  'ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAPADB/3sBAAB8VDU=';

/** An IEEE float16 bit pattern's value, decoded plainly (independent of src/formats/float16.ts). */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? Number.NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
