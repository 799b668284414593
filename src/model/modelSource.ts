// Where a language model's files come from: a local folder in Hugging Face layout, or a hub
// id fetched once into saekit's cache. transformers.js then always loads from a local folder,
// so the hooked copies of the ONNX graph can sit beside the original (see languageModel.ts).

import { createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { tempPathFor } from '../formats/fileIo.js';

export interface ModelSourceOptions {
  /** The ONNX file under onnx/, without extension (default "model"). */
  onnxFile?: string;
  /** Never touch the network (also HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1). */
  offline?: boolean;
  /** Where hub models are cached (default $SAEKIT_CACHE, else $HF_HOME/saekit, else ~/.cache/saekit). */
  cacheDir?: string;
  /** Hub revision (default "main"). */
  revision?: string;
}

/** The files a decoder needs, relative to the model folder. */
export function requiredFiles(onnxFile = 'model'): string[] {
  return ['config.json', 'tokenizer.json', 'tokenizer_config.json', `onnx/${onnxFile}.onnx`];
}

export function defaultCacheDir(): string {
  if (process.env.SAEKIT_CACHE) return process.env.SAEKIT_CACHE;
  if (process.env.HF_HOME) return join(process.env.HF_HOME, 'saekit');
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'saekit');
}

export function isOffline(opts: ModelSourceOptions = {}): boolean {
  const on = (v: string | undefined) => v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
  return opts.offline === true || on(process.env.HF_HUB_OFFLINE) || on(process.env.TRANSFORMERS_OFFLINE);
}

/**
 * Resolves MODEL to a local folder holding requiredFiles(): an existing folder is checked and
 * used as is; anything else must look like a hub id (`owner/name`) and is looked up in the
 * cache, then downloaded unless offline. Errors name the missing file, URL or cache path.
 */
export async function resolveModelDir(model: string, opts: ModelSourceOptions = {}): Promise<string> {
  if (typeof model !== 'string' || model === '') throw new ValidationError('Expected a model folder or hub id for --model');
  const onnxFile = opts.onnxFile ?? 'model';
  if (existsSync(model)) {
    const dir = resolve(model);
    if (!statSync(dir).isDirectory()) {
      throw new FormatError(dir, 'a model must be a folder in Hugging Face layout (config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx)');
    }
    const missing = requiredFiles(onnxFile).filter((f) => !existsSync(join(dir, f)));
    if (missing.length > 0) throw new FormatError(dir, `model folder lacks ${missing.join(', ')}`);
    return dir;
  }
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(model) || model.includes('..')) {
    throw new ValidationError(`Model ${JSON.stringify(model)} is neither an existing folder nor a hub id (owner/name)`);
  }
  const revision = opts.revision ?? 'main';
  const dir = join(opts.cacheDir ?? defaultCacheDir(), 'models', ...model.split('/'), revision);
  const missing = requiredFiles(onnxFile).filter((f) => !existsSync(join(dir, f)));
  if (missing.length === 0) return dir;
  if (isOffline(opts)) {
    throw new FormatError(dir, `model ${model} is not in the cache (missing ${missing.join(', ')}) and offline mode is on`);
  }
  const endpoint = (process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  for (const file of missing) {
    const url = `${endpoint}/${model}/resolve/${encodeURIComponent(revision)}/${file}`;
    await download(url, join(dir, file), model);
  }
  return dir;
}

/** Fetches URL into PATH through a temporary sibling, so a cut download leaves nothing behind. */
async function download(url: string, path: string, model: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', headers: process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {} });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new FormatError(url, `no local folder ${model}, and cannot download it from the hub (${cause?.code ?? cause?.message ?? (e as Error).message}); offline? put the files in a local folder and pass it as --model`);
  }
  if (!res.ok) {
    throw new FormatError(url, `no local folder ${model}, and cannot download it from the hub: HTTP ${res.status}${res.status === 404 ? ' (no such repository or file; an ONNX export is needed, e.g. the Xenova/* or onnx-community/* repositories)' : ''}`);
  }
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  try {
    // Streamed: model files run to GiB.
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(tmp, { flags: 'wx' }));
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
