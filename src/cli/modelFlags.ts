// Flags shared by the commands that run a language model (activations, features, eval,
// generate), and the SAE settings they read from an SAE's cfg.json metadata.
import { UsageError } from '../errors.js';
import type { ReleaseEntry } from '../hub/registry.js';
import { LanguageModel } from '../model/languageModel.js';
import type { ModelDtype } from '../model/modelSource.js';
import type { Sae } from '../sae.js';
import { num, required, type Options } from './args.js';

export const modelFlags: Options = {
  model: { type: 'string' },
  'onnx-file': { type: 'string' },
  dtype: { type: 'string' },
  'model-dtype': { type: 'string' },
  offline: { type: 'boolean' },
  'model-threads': { type: 'string' },
};

export const modelUsage = '--model DIR|HUB_ID [--model-dtype fp32|fp16|q8|int8|uint8|q4|q4f16|bnb4] [--onnx-file NAME] [--offline] [--model-threads N]';

/** The model --model names; without it, a pretrained release's ONNX export of its model. */
export async function loadModelFromFlags(values: Record<string, unknown>, release?: ReleaseEntry): Promise<LanguageModel> {
  const fromRelease = values.model === undefined ? release?.onnx_model : undefined;
  if (values.model === undefined && release && !fromRelease) {
    throw new UsageError(`release ${release.release} names no ONNX export of ${release.model}: give --model DIR|HUB_ID`);
  }
  const onnxFile = (values['onnx-file'] as string | undefined) ?? fromRelease?.onnx_file;
  const model = await LanguageModel.load(fromRelease?.repo ?? required(values, 'model'), {
    ...(onnxFile !== undefined && { onnxFile }),
    ...(modelDtype(values) !== undefined && { dtype: modelDtype(values) }),
    ...(values.offline === true && { offline: true }),
    ...(values['model-threads'] !== undefined && { threads: num(values, 'model-threads', 'int', 1) }),
  });
  // Which variant ran is said whenever it is not the plain fp32 onnx/model.onnx.
  if (model.onnxFile !== 'model') process.stderr.write(`model ${model.name}: using onnx/${model.onnxFile}.onnx\n`);
  return model;
}

/**
 * The model variant: --model-dtype, else --dtype unless it names an activation dtype (float32,
 * float16, bfloat16: `saekit activations --dtype` is the dump's). The two sets are disjoint.
 */
function modelDtype(values: Record<string, unknown>): ModelDtype | undefined {
  const v = (values['model-dtype'] ?? values.dtype) as string | undefined;
  if (v === undefined || (values['model-dtype'] === undefined && ['float32', 'float16', 'bfloat16'].includes(v))) return undefined;
  return v as ModelDtype;
}

/** The hook an SAE reads: --hook wins, else its cfg's hook_name. */
export function saeHook(values: Record<string, unknown>, sae: Sae, saeDir: string): string {
  const hook = (values.hook as string | undefined) ?? sae.config.hookName;
  if (!hook) throw new UsageError(`${saeDir} names no hook (cfg.json metadata.hook_name): give --hook`);
  return hook;
}

/** SAELens' prepend_bos from the SAE's metadata (default true); --no-bos turns it off. */
export function saePrependBos(values: Record<string, unknown>, sae: Sae | undefined): boolean {
  if (values['no-bos'] === true) return false;
  const m = sae?.config.metadata.prepend_bos;
  return typeof m === 'boolean' ? m : true;
}

/**
 * --context-size, else the SAE's metadata.context_size, else FALLBACK; clipped to MODEL's
 * positions (with one line saying so): SAELens SAEs are often trained on longer contexts than
 * a small model's export accepts, and a window past the last position embedding fails deep
 * inside ONNX runtime.
 */
export function saeContextSize(values: Record<string, unknown>, sae: Sae | undefined, fallback: number, model?: LanguageModel): number {
  const flag = num(values, 'context-size', 'int', 1);
  const m = sae?.config.metadata.context_size;
  const wanted = flag ?? (typeof m === 'number' && Number.isInteger(m) && m >= 1 ? m : fallback);
  return clipContext(wanted, flag !== undefined ? '--context-size' : typeof m === 'number' ? "the SAE's context_size" : 'the default context size', model);
}

/** SIZE, or the model's position limit when SIZE exceeds it (one line on stderr). */
export function clipContext(size: number, what: string, model?: LanguageModel): number {
  const limit = model?.maxPositions;
  if (limit === undefined || size <= limit) return size;
  process.stderr.write(`${what} ${size} exceeds the ${limit} positions of model ${model!.name}: using windows of ${limit} tokens\n`);
  return limit;
}
