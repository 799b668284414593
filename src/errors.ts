// Named error classes. Every message names the thing at fault (file, tensor, flag, shape)
// so a user can act on one line of stderr. The CLI maps UsageError to exit code 2 and
// every other error to exit code 1.

/** Base class: anything saekit throws on purpose. */
export class SaekitError extends Error {
  override name = 'SaekitError';
}

/** A file is missing, truncated, corrupt or of an unsupported kind. */
export class FormatError extends SaekitError {
  override name = 'FormatError';
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** An argument has the wrong type, shape, dtype or value. */
export class ValidationError extends SaekitError {
  override name = 'ValidationError';
}

/** A row of input holds NaN or Infinity; row and column say where (row within the call). */
export class NonFiniteInputError extends ValidationError {
  override name = 'NonFiniteInputError';
  constructor(
    readonly inputName: string,
    readonly row: number,
    readonly col: number,
  ) {
    super(`${inputName} row ${row} has a non-finite value (NaN or Infinity) at column ${col}`);
  }
}

/** Bad command-line usage (unknown flag, missing required flag). */
export class UsageError extends SaekitError {
  override name = 'UsageError';
}

/** The native addon or a device failed (message carries the native detail). */
export class NativeError extends SaekitError {
  override name = 'NativeError';
}

/** sharp's message template: "Expected X for Y but received Z". */
export function expected(what: string, forName: string, received: unknown): ValidationError {
  return new ValidationError(`Expected ${what} for ${forName} but received ${describe(received)}`);
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length: number }).length})`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return `array(${v.length})`;
  return typeof v;
}
