// f16/bf16 conversions against references computed independently with exact double
// arithmetic: values from the bit-field definition, rounding by comparing with the exact
// midpoint of the two neighbouring representable values (ties to the even pattern).

import { describe, it, expect } from 'vitest';
import { bf16ToF32Array, f16ToF32Array, f32BitsToBf16Bits, f32BitsToF16Bits, f32ToBf16Array, f32ToF16Array } from '../src/formats/index.js';
import { rng } from './helpers/formatsFixtures.js';

/** f16 value from the IEEE definition. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function bf16Value(b: number): number {
  const sign = b & 0x8000 ? -1 : 1;
  const exp = (b >>> 7) & 0xff;
  const mant = b & 0x7f;
  if (exp === 0xff) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -133;
  return sign * (1 + mant / 128) * 2 ** (exp - 127);
}

/** Collects failures and asserts once: expect() per element over 10^5 cases is slow. */
function mismatches(): { check: (ok: boolean, what: () => string) => void; list: string[] } {
  const list: string[] = [];
  return { list, check: (ok, what) => void (ok || list.length >= 10 || list.push(what())) };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function bitsOf(v: number): number {
  f32[0] = v;
  return u32[0]!;
}
function valueOf(bits: number): number {
  u32[0] = bits;
  return f32[0]!;
}

/** Positive finite f16 values, ascending by pattern 0x0000..0x7bff. */
const F16_POS = Array.from({ length: 0x7c00 }, (_, h) => f16Value(h));

/** Nearest f16 pattern to an f32 value by exhaustive search, ties to even. */
function refToF16(v: number): number {
  if (Number.isNaN(v)) return NaN;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // halfway 65504..65536 and up: inf
  let lo = 0;
  let hi = F16_POS.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (F16_POS[mid]! <= a) lo = mid;
    else hi = mid - 1;
  }
  if (F16_POS[lo] === a || lo === 0x7bff) return sign | lo;
  const midpoint = (F16_POS[lo]! + F16_POS[lo + 1]!) / 2; // exact in double
  if (a < midpoint) return sign | lo;
  if (a > midpoint) return sign | (lo + 1);
  return sign | (lo % 2 === 0 ? lo : lo + 1);
}

function refToBf16(bits: number): number {
  const v = valueOf(bits);
  if (Number.isNaN(v)) return NaN;
  const sign = bits & 0x80000000 ? 0x8000 : 0;
  const down = (bits >>> 16) & 0x7fff; // magnitude truncated
  if (bf16Value(down) === Math.abs(v)) return sign | down;
  const up = down + 1;
  const upValue = up === 0x7f80 ? 2 ** 128 : bf16Value(up); // rounding past max goes to inf
  const midpoint = (bf16Value(down) + upValue) / 2;
  const a = Math.abs(v);
  if (a < midpoint) return sign | down;
  if (a > midpoint) return sign | up;
  return sign | (down % 2 === 0 ? down : up);
}

describe('f16 -> f32', () => {
  it('matches the IEEE definition for all 65536 patterns, NaN payloads kept', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const out = f16ToF32Array(all);
    const bits = new Uint32Array(out.buffer);
    const m = mismatches();
    for (let h = 0; h < 65536; h++) {
      const want = f16Value(h);
      const ok = Number.isNaN(want)
        ? bits[h] === (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0
        : Object.is(out[h], want); // also checks the sign of zero
      m.check(ok, () => `0x${h.toString(16)}: ${out[h]} vs ${want}`);
    }
    expect(m.list).toEqual([]);
  });

  it('writes into a slice of a larger array', () => {
    const out = new Float32Array(5).fill(9);
    f16ToF32Array(Uint16Array.of(0x3c00, 0xc000), out.subarray(2));
    expect([...out]).toEqual([9, 9, 1, -2, 9]);
  });
});

describe('f32 -> f16 (round to nearest even)', () => {
  it('round-trips every f16 value and keeps NaN a NaN', () => {
    const m = mismatches();
    for (let h = 0; h < 65536; h++) {
      const v = f16Value(h);
      const back = f32BitsToF16Bits(bitsOf(v));
      const ok = Number.isNaN(v) ? (back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0 : back === h;
      m.check(ok, () => `0x${h.toString(16)} -> 0x${back.toString(16)}`);
    }
    expect(m.list).toEqual([]);
  });

  it('rounds exact midpoints to even and their f32 neighbours to the nearer value', () => {
    const m = mismatches();
    for (let h = 0; h < 0x7bff; h++) {
      const mid = (F16_POS[h]! + F16_POS[h + 1]!) / 2;
      for (const bits of [bitsOf(mid), bitsOf(mid) - 1, bitsOf(mid) + 1]) {
        for (const b of [bits, (bits | 0x80000000) >>> 0]) {
          const got = f32BitsToF16Bits(b);
          const want = refToF16(valueOf(b));
          m.check(got === want, () => `${valueOf(b)}: 0x${got.toString(16)} vs 0x${want.toString(16)}`);
        }
      }
    }
    expect(m.list).toEqual([]);
  });

  it('matches the exhaustive reference on random f32 patterns and edge values', () => {
    const r = rng(16);
    const edges = [0, -0, 2 ** -25, 2 ** -25 * 1.0000001, 2 ** -24, 1.5 * 2 ** -24, 2 ** -14, 65504, 65519.99, 65520, 65536, 1e10, -1e10, Infinity, -Infinity];
    const patterns = [...edges.map(bitsOf)];
    for (let i = 0; i < 200_000; i++) patterns.push(Math.floor(r() * 2 ** 32));
    // Concentrate some on the f16 range, where rounding is interesting.
    for (let i = 0; i < 200_000; i++) patterns.push((0x33000000 + Math.floor(r() * (0x47800000 - 0x33000000))) | (r() < 0.5 ? 0x80000000 : 0));
    const src = new Float32Array(new Uint32Array(patterns.map((p) => p >>> 0)).buffer);
    const out = f32ToF16Array(src);
    const m = mismatches();
    for (let i = 0; i < src.length; i++) {
      const want = refToF16(src[i]!);
      const ok = Number.isNaN(want) ? (out[i]! & 0x7fff) > 0x7c00 : out[i] === want;
      m.check(ok, () => `${src[i]}: 0x${out[i]!.toString(16)} vs 0x${want.toString(16)}`);
    }
    expect(m.list).toEqual([]);
  });
});

describe('bf16', () => {
  it('widens all 65536 patterns to their IEEE values', () => {
    const out = bf16ToF32Array(Uint16Array.from({ length: 65536 }, (_, i) => i));
    const m = mismatches();
    for (let b = 0; b < 65536; b++) {
      const want = bf16Value(b);
      m.check(Number.isNaN(want) ? Number.isNaN(out[b]) : Object.is(out[b], want), () => `0x${b.toString(16)}: ${out[b]} vs ${want}`);
    }
    expect(m.list).toEqual([]);
  });

  it('narrows with round to nearest even, matching the midpoint reference', () => {
    const r = rng(17);
    const patterns: number[] = [bitsOf(3.4028234663852886e38), bitsOf(-3.4e38), 0x7f7f8000, 0x7f7f7fff, 0x00008000, 0x00018000];
    for (let i = 0; i < 200_000; i++) patterns.push(Math.floor(r() * 2 ** 32));
    // Exact ties (low half 0x8000) on both parities of the kept half.
    for (let i = 0; i < 20_000; i++) patterns.push(((Math.floor(r() * 2 ** 16) << 16) | 0x8000) >>> 0);
    const src = new Float32Array(new Uint32Array(patterns).buffer);
    const out = f32ToBf16Array(src);
    const m = mismatches();
    for (let i = 0; i < patterns.length; i++) {
      const want = refToBf16(patterns[i]!);
      const ok = Number.isNaN(want) ? (out[i]! & 0x7fff) > 0x7f80 : out[i] === want;
      m.check(ok, () => `0x${patterns[i]!.toString(16)}: 0x${out[i]!.toString(16)} vs 0x${want.toString(16)}`);
    }
    expect(m.list).toEqual([]);
    expect(f32BitsToBf16Bits(0x7fc00001)).toBe(0x7fc0);
  });
});
