// Argument parsing on node:util's parseArgs (strict): unknown flags and missing values are
// usage errors (exit code 2) that name the flag.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors.js';
import { setThreads, type Device } from '../system.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export function parse(argv: string[], options: Options, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function required(values: Record<string, unknown>, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError(`missing required flag --${flag}`);
  return v;
}

export function deviceFlag(values: Record<string, unknown>): Device {
  const d = (values.device as string | undefined) ?? 'auto';
  if (d !== 'auto' && d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device must be auto, cpu or cuda but got '${d}'`);
  return d;
}

export function applyThreads(values: Record<string, unknown>): void {
  if (values.threads === undefined) return;
  const n = Number(values.threads);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--threads must be a positive integer but got '${values.threads}'`);
  setThreads(n);
}

export const commonFlags: Options = {
  device: { type: 'string' },
  threads: { type: 'string' },
};

/** A numeric flag: undefined when absent, a UsageError naming the flag when malformed or below MIN. */
export function num(values: Record<string, unknown>, flag: string, kind: 'int' | 'float', min = 0): number | undefined {
  const v = values[flag];
  if (v === undefined) return undefined;
  const n = Number(v);
  const ok = kind === 'int' ? Number.isSafeInteger(n) : Number.isFinite(n);
  if (!ok || n < min) throw new UsageError(`--${flag} must be ${kind === 'int' ? 'an integer' : 'a number'} >= ${min} but got '${v}'`);
  return n;
}

/** A flag restricted to ALLOWED values. */
export function choice<T extends string>(values: Record<string, unknown>, flag: string, allowed: readonly T[]): T | undefined {
  const v = values[flag] as string | undefined;
  if (v === undefined) return undefined;
  if (!allowed.includes(v as T)) throw new UsageError(`--${flag} must be one of ${allowed.join(', ')} but got '${v}'`);
  return v as T;
}
