// Error assertions for the typed API: the error CLASS and the parts of the message that name
// the thing at fault, for both a synchronous throw and a rejected Promise.
import { expect } from 'vitest';

type ErrorClass = abstract new (...args: never[]) => Error;

function check(err: unknown, cls: ErrorClass, parts: readonly string[]): Error {
  expect(err, 'expected an error, got none').toBeDefined();
  expect(err).toBeInstanceOf(cls);
  for (const part of parts) expect((err as Error).message).toContain(part);
  return err as Error;
}

/** Calls fn, which must throw synchronously an instance of cls whose message holds every part. */
export function expectThrow(fn: () => unknown, cls: ErrorClass, ...parts: string[]): Error {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  return check(err, cls, parts);
}

/**
 * Awaits fn(), which must reject (or throw: an async function never throws synchronously, but
 * a plain function returning a Promise may) with an instance of cls holding every part.
 */
export async function expectReject(fn: () => Promise<unknown>, cls: ErrorClass, ...parts: string[]): Promise<Error> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  return check(err, cls, parts);
}
