// Checks shared by the SAE directory readers: cfg.json fields, tensor presence, dtype and
// shape against the config, and finiteness. Every failure is a FormatError naming the file,
// the tensor or field, and what was expected, so one line of stderr is enough to act on.

import { readFile } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { formatShape } from './elements.js';
import type { SafetensorsReader } from './safetensors.js';

/** safetensors dtype -> the dtype name SAELens configs use. */
const FLOAT_DTYPE_NAMES: Readonly<Record<string, string>> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  F64: 'float64',
};

export type Json = Record<string, unknown>;

export async function readJsonObject(file: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(file, code === 'ENOENT' ? 'file not found' : `cannot read: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FormatError(file, 'not a JSON object');
  return value as Json;
}

/** A positive integer field, or undefined when absent (null counts as absent). */
export function optionalCount(file: string, cfg: Json, key: string): number | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new FormatError(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

export function requiredCount(file: string, cfg: Json, key: string): number {
  const v = optionalCount(file, cfg, key);
  if (v === undefined) throw new FormatError(file, `missing '${key}'`);
  return v;
}

export function optionalBool(file: string, cfg: Json, key: string, fallback: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new FormatError(file, `'${key}' must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function optionalString(cfg: Json, key: string): string | undefined {
  const v = cfg[key];
  return typeof v === 'string' ? v : undefined;
}

/** cfg without the given keys: what is passed through as SaeConfig.metadata. */
export function without(cfg: Json, keys: readonly string[]): Json {
  return Object.fromEntries(Object.entries(cfg).filter(([k]) => !keys.includes(k)));
}

export function expectShape(file: string, tensor: string, actual: readonly number[], expected: readonly number[], because: string): void {
  if (actual.length === expected.length && actual.every((d, i) => d === expected[i])) return;
  throw new FormatError(file, `tensor '${tensor}' has shape ${formatShape(actual)} but ${because} => expected ${formatShape(expected)}`);
}

/** Weights are rejected, not patched, when they hold NaN or inf: the first one is reported. */
export function checkFinite(file: string, tensor: string, data: Float32Array, shape: readonly number[]): void {
  const i = firstNonFinite(data);
  if (i < 0) return;
  const cols = shape.length === 2 ? shape[1]! : 0;
  const where = cols > 0 ? ` (row ${Math.floor(i / cols)}, column ${i % cols})` : '';
  throw new FormatError(file, `tensor '${tensor}' has a non-finite value (${data[i]}) at index ${i}${where}`);
}

/**
 * Index of the first NaN or +-inf, or -1. A loop with nothing else in it: V8 keeps it tight
 * (~1.3 ns per float here; the same test with the error built inside the loop ran 5x slower).
 */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    if (v - v !== 0) return i; // NaN - NaN and Inf - Inf are NaN
  }
  return -1;
}

/** SAELens dtype name of a float tensor; a FormatError for integer or exotic dtypes. */
export function floatDtypeName(reader: SafetensorsReader, tensor: string): string {
  const { dtype } = reader.info(tensor);
  const name = FLOAT_DTYPE_NAMES[dtype];
  if (name === undefined) {
    throw new FormatError(reader.file, `tensor '${tensor}' has dtype ${dtype}; SAE weights must be F32, F16, BF16 or F64`);
  }
  return name;
}

/** Reads a float tensor as float32 after checking its shape, then checks it is finite. */
export async function readWeight(
  reader: SafetensorsReader,
  tensor: string,
  expected: readonly number[],
  because: string,
): Promise<Float32Array> {
  floatDtypeName(reader, tensor);
  expectShape(reader.file, tensor, reader.info(tensor).shape, expected, because);
  const data = await reader.readFloat32(tensor);
  checkFinite(reader.file, tensor, data, expected);
  return data;
}
