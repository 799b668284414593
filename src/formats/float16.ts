// IEEE half (f16) and bfloat16 (bf16) <-> float32 conversion.
//
// SAE checkpoints ship in float16 and bfloat16 as often as in float32, and saekit computes in
// float32, so these run over hundreds of millions of elements: they work on raw bit patterns
// through Uint32Array views (no per-element allocation, NaN payloads kept bit-exact, which
// reading a NaN into a JS number would not guarantee). Narrowing rounds to nearest, ties to
// even, like numpy's astype and torch's .to(); overflow becomes +-inf, tiny values become
// subnormals or signed zero.

/** f16 bits -> f32 bits for all 65536 patterns; built on first use (256 KiB). */
let f16Table: Uint32Array | undefined;

function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      // inf (mant 0) or NaN: keep the payload in the top mantissa bits.
      table[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else if (exp !== 0) {
      table[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // rebias 15 -> 127
    } else if (mant === 0) {
      table[h] = sign >>> 0;
    } else {
      // Subnormal f16 = mant * 2^-24: normalize it, every one is a normal f32.
      let e = 113; // biased f32 exponent of 2^-14 (the f16 subnormal scale) before shifting
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      table[h] = (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
    }
  }
  f16Table = table;
  return table;
}

/** f32 bits -> f16 bits, round to nearest even. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {
    // NaN keeps its top payload bits and is forced quiet so it cannot turn into inf.
    return abs > 0x7f800000 ? sign | 0x7e00 | ((abs >>> 13) & 0x3ff) : sign | 0x7c00;
  }
  // 65520 is halfway between 65504 (max f16, odd mantissa) and 65536: ties-to-even goes up.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal range: rebias the exponent (127 -> 15) and drop 13 mantissa bits.
    let h = (abs - 0x38000000) >>> 13;
    const rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // 2^-25 and below round to zero (2^-25 itself is a tie with the even pattern 0).
  if (abs <= 0x33000000) return sign;
  // Subnormal result: mant * 2^-24 with mant = round(value * 2^24).
  const e = abs >>> 23;
  const m = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  let h = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) !== 0)) h++; // may carry into the smallest normal
  return sign | h;
}

/** f32 bits -> bf16 bits, round to nearest even (bf16 is the top half of an f32). */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff; // quiet NaN
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** Widens f16 bits into float32; `out` may be given to fill a slice of a larger array. */
export function f16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const table = f16ToF32Table();
  const o = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) o[i] = table[src[i]!]!;
  return out;
}

/** Widens bf16 bits into float32 (exact: a shift). */
export function bf16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i]! << 16;
  return out;
}

/** Narrows float32 to f16 bits, round to nearest even. */
export function f32ToF16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** Narrows float32 to bf16 bits, round to nearest even. */
export function f32ToBf16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  return out;
}
