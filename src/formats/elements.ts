// Element types shared by the safetensors and npy readers: sizes, typed-array views and the
// conversion to float32 that every weight and activation goes through. Data on disk is
// little-endian in both formats; saekit only runs on little-endian hosts (x86-64, arm64), so
// aligned bytes can be viewed as typed arrays directly.

import { bf16ToF32Array, f16ToF32Array } from './float16.js';

/** f16 and bf16 are carried as raw bits in a Uint16Array. */
export type ElementKind = 'f32' | 'f64' | 'f16' | 'bf16' | 'i32' | 'i64';

export type ElementArray = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array;

export const ELEMENT_SIZE: Readonly<Record<ElementKind, number>> = {
  f32: 4,
  f64: 8,
  f16: 2,
  bf16: 2,
  i32: 4,
  i64: 8,
};

const ARRAY_CLASS = {
  f32: Float32Array,
  f64: Float64Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  i64: BigInt64Array,
} as const;

/** Name of the typed array class that holds `kind`, for error messages. */
export function arrayClassName(kind: ElementKind): string {
  return ARRAY_CLASS[kind].name;
}

export function isArrayOfKind(kind: ElementKind, data: unknown): data is ElementArray {
  return data instanceof ARRAY_CLASS[kind];
}

/** Views bytes (byteOffset aligned to the element size) as the typed array of `kind`. */
export function viewAs(kind: ElementKind, bytes: Uint8Array): ElementArray {
  const { buffer, byteOffset } = bytes;
  const n = bytes.byteLength / ELEMENT_SIZE[kind];
  switch (kind) {
    case 'f32':
      return new Float32Array(buffer, byteOffset, n);
    case 'f64':
      return new Float64Array(buffer, byteOffset, n);
    case 'f16':
    case 'bf16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'i32':
      return new Int32Array(buffer, byteOffset, n);
    case 'i64':
      return new BigInt64Array(buffer, byteOffset, n);
  }
}

/** The bytes of a typed array, without copying. */
export function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Converts aligned little-endian elements to float32 into out[outOffset...]. */
export function toFloat32(kind: ElementKind, bytes: Uint8Array, out: Float32Array, outOffset = 0): void {
  const src = viewAs(kind, bytes);
  const n = src.length;
  const dst = out.subarray(outOffset, outOffset + n);
  switch (kind) {
    case 'f16':
      f16ToF32Array(src as Uint16Array, dst);
      return;
    case 'bf16':
      bf16ToF32Array(src as Uint16Array, dst);
      return;
    case 'i64': {
      const s = src as BigInt64Array;
      for (let i = 0; i < n; i++) dst[i] = Number(s[i]!);
      return;
    }
    default:
      dst.set(src as Float32Array | Float64Array | Int32Array); // f64 and i32 round via Math.fround
  }
}

/** Number of elements of a shape ([] is a scalar: 1). */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
