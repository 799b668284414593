// Where a language model's files come from: a local folder in Hugging Face layout, or a hub
// id fetched once into the hub cache. transformers.js then always loads from a local folder,
// so the hooked copies of the ONNX graph can sit beside the original (see languageModel.ts).

import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { hubFile, type HubOptions } from '../hub/hub.js';

export interface ModelSourceOptions {
  /** The ONNX file under onnx/, without extension; wins over dtype. */
  onnxFile?: string;
  /**
   * Which published variant, by transformers.js's names: fp32 -> onnx/model.onnx, fp16 ->
   * model_fp16, q8 -> model_quantized, int8, uint8, q4, q4f16, bnb4 -> model_<dtype>.
   * Default: fp32 where the folder has it, else the first variant present in that order.
   */
  dtype?: ModelDtype;
  /** Never touch the network (also HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1). */
  offline?: boolean;
  /** The hub cache (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  onProgress?: (p: { file: string; bytes: number; total: number }) => void;
  /** Hub revision (default "main"). */
  revision?: string;
}

export const MODEL_DTYPES = ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4'] as const;
export type ModelDtype = (typeof MODEL_DTYPES)[number];

/** transformers.js's file suffix per dtype (DEFAULT_DTYPE_SUFFIX_MAPPING). */
export function dtypeFile(dtype: ModelDtype): string {
  return dtype === 'fp32' ? 'model' : dtype === 'q8' ? 'model_quantized' : `model_${dtype}`;
}

/**
 * The ONNX file (under onnx/, no extension) to use: --onnx-file, else --dtype's file, else for
 * a local folder the first of MODEL_DTYPES present (fp32 first), else "model".
 */
export function chooseOnnxFile(opts: ModelSourceOptions, localDir?: string): string {
  if (opts.onnxFile !== undefined) {
    if (!/^[\w.-]+$/.test(opts.onnxFile)) throw new ValidationError(`Expected a file name without extension for --onnx-file but received ${JSON.stringify(opts.onnxFile)}`);
    return opts.onnxFile;
  }
  if (opts.dtype !== undefined) {
    if (!(MODEL_DTYPES as readonly string[]).includes(opts.dtype)) {
      throw new ValidationError(`Expected one of ${MODEL_DTYPES.join(', ')} for --dtype but received ${JSON.stringify(opts.dtype)}`);
    }
    return dtypeFile(opts.dtype);
  }
  if (localDir !== undefined) {
    for (const d of MODEL_DTYPES) if (existsSync(join(localDir, 'onnx', `${dtypeFile(d)}.onnx`))) return dtypeFile(d);
  }
  return 'model';
}

/** The files a decoder needs, relative to the model folder. */
export function requiredFiles(onnxFile = 'model'): string[] {
  return ['config.json', 'tokenizer.json', 'tokenizer_config.json', `onnx/${onnxFile}.onnx`];
}

/** The hub client options these model options imply. */
export function hubOptions(opts: ModelSourceOptions): HubOptions {
  return {
    ...(opts.cacheDir !== undefined && { cacheDir: opts.cacheDir }),
    ...(opts.revision !== undefined && { revision: opts.revision }),
    ...(isOffline(opts) && { offline: true }),
    ...(opts.onProgress && { onProgress: opts.onProgress }),
  };
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
  if (existsSync(model)) {
    const dir = resolve(model);
    const onnxFile = chooseOnnxFile(opts, dir);
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
  const onnxFile = chooseOnnxFile(opts);
  // Hub ids share huggingface_hub's cache (src/hub/hub.ts): resumable, verified downloads,
  // and files Python tools fetched are reused. Missing offline: an error at once.
  let dir = '';
  for (const file of requiredFiles(onnxFile)) {
    const local = await hubFile(model, file, hubOptions(opts)).catch((e: unknown) => {
      throw e instanceof FormatError && / 404/.test(e.message) ? new FormatError(e.file, `${e.message.slice(e.file.length + 2)} (no local folder ${model} either)`) : e;
    });
    if (file === 'config.json') dir = dirname(local);
  }
  return dir;
}
