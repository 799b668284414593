// One entry point for loading an SAE from disk, whatever produced it. The format is told by
// the files present, not by flags, so users can point saekit at a downloaded folder as is.

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { checkCltTarget, type ReadOptions } from './cltDecoder.js';
import { readGemmaScope } from './gemmaScope.js';
import { GEMMA_SCOPE2_PARAMS, readGemmaScope2 } from './gemmaScope2.js';
import { readSaeLens, SAELENS_CFG, SAELENS_WEIGHTS } from './saeLens.js';
import { readSparsify, SPARSIFY_CFG, SPARSIFY_WEIGHTS } from './sparsify.js';

const GEMMA_SCOPE_PARAMS = 'params.npz';

const EXPECTED =
  `${SAELENS_CFG} + ${SAELENS_WEIGHTS} (SAELens), ${SPARSIFY_CFG} + ${SPARSIFY_WEIGHTS} (sparsify), ` +
  `${GEMMA_SCOPE_PARAMS} (Gemma Scope), ${GEMMA_SCOPE2_PARAMS} (Gemma Scope 2), or a sparsify run directory with one hookpoint`;

async function listDir(dir: string): Promise<{ files: Set<string>; dirs: string[] }> {
  const entries = await readdir(dir, { withFileTypes: true });
  return {
    files: new Set(entries.filter((e) => !e.isDirectory()).map((e) => e.name)),
    dirs: entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(),
  };
}

async function isSparsifyDir(dir: string): Promise<boolean> {
  const { files } = await listDir(dir);
  return files.has(SPARSIFY_CFG) && files.has(SPARSIFY_WEIGHTS);
}

/**
 * Loads an SAE from a SAELens directory, a sparsify hookpoint directory (or a run directory
 * holding exactly one), a Gemma Scope directory with params.npz, or a .npz file itself, a
 * Gemma Scope 2 directory, or a Gemma Scope 2 CLT layer's .safetensors (options.cltTarget picks
 * its decoder).
 * Weights come back as float32 with any SAELens inference-time rescaling folded in.
 */
export async function readSaeDir(path: string, options: ReadOptions = {}): Promise<SaeWeights> {
  const cltTarget = checkCltTarget(options.cltTarget);
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new FormatError(path, `cannot read: ${(err as Error).message}`);
    throw new FormatError(path, `no such file or directory (expected an SAE directory: ${EXPECTED})`);
  }
  if (!isDir) {
    if (path.endsWith('.npz')) return readGemmaScope(path);
    // A Gemma Scope 2 cross-layer transcoder keeps each layer in its own <name>.safetensors.
    if (path.endsWith('.safetensors')) return readGemmaScope2(path, cltTarget);
    throw new FormatError(path, `not an SAE: expected a directory with ${EXPECTED}, a Gemma Scope .npz file or a Gemma Scope 2 CLT layer's .safetensors`);
  }
  const { files, dirs } = await listDir(path);
  if (files.has(SAELENS_CFG) && files.has(SAELENS_WEIGHTS)) return readSaeLens(path);
  if (files.has(SPARSIFY_CFG) && files.has(SPARSIFY_WEIGHTS)) return readSparsify(path);
  if (files.has(GEMMA_SCOPE_PARAMS)) return readGemmaScope(join(path, GEMMA_SCOPE_PARAMS));
  if (files.has(GEMMA_SCOPE2_PARAMS)) return readGemmaScope2(path, cltTarget);

  const hookpoints: string[] = [];
  for (const d of dirs) if (await isSparsifyDir(join(path, d))) hookpoints.push(d);
  if (hookpoints.length === 1) return readSparsify(join(path, hookpoints[0]!));
  if (hookpoints.length > 1) {
    throw new FormatError(path, `holds ${hookpoints.length} sparsify hookpoints (${hookpoints.join(', ')}): point at one of them`);
  }
  const found = [...files, ...dirs.map((d) => `${d}/`)].sort();
  const list = found.length > 20 ? `${found.slice(0, 20).join(', ')}, ...` : found.join(', ');
  throw new FormatError(path, `no SAE found: expected ${EXPECTED}; found ${list || 'an empty directory'}`);
}
