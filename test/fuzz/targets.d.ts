// Types of targets.js (plain JS so that test/fuzz/run.js needs no TypeScript loader).
export interface FuzzTarget {
  dict?: string[];
  seeds(work: string): Promise<Uint8Array[]>;
  run(bytes: Uint8Array, work: string): Promise<'loaded' | 'refused'>;
  sae?: { dispose(): void };
}
export class FuzzFinding extends Error {}
export const targets: Record<string, FuzzTarget>;
export const lastRefusal: string;
export function seedsOf(name: string, work: string): Promise<Uint8Array[]>;
export function corpusDir(name: string): string;
export function regressionsDir(name: string): string;
