// Flags shared by the commands that run a language model (activations, features, eval,
// generate), and the SAE settings they read from an SAE's cfg.json metadata.
import { UsageError } from '../errors.js';
import type { ReleaseEntry } from '../hub/registry.js';
import { LanguageModel } from '../model/languageModel.js';
import type { Sae } from '../sae.js';
import { num, required, type Options } from './args.js';

export const modelFlags: Options = {
  model: { type: 'string' },
  'onnx-file': { type: 'string' },
  offline: { type: 'boolean' },
  'model-threads': { type: 'string' },
};

export const modelUsage = '--model DIR|HUB_ID [--onnx-file NAME] [--offline] [--model-threads N]';

/** The model --model names; without it, a pretrained release's ONNX export of its model. */
export async function loadModelFromFlags(values: Record<string, unknown>, release?: ReleaseEntry): Promise<LanguageModel> {
  const fromRelease = values.model === undefined ? release?.onnx_model : undefined;
  if (values.model === undefined && release && !fromRelease) {
    throw new UsageError(`release ${release.release} names no ONNX export of ${release.model}: give --model DIR|HUB_ID`);
  }
  const onnxFile = (values['onnx-file'] as string | undefined) ?? fromRelease?.onnx_file;
  return LanguageModel.load(fromRelease?.repo ?? required(values, 'model'), {
    ...(onnxFile !== undefined && { onnxFile }),
    ...(values.offline === true && { offline: true }),
    ...(values['model-threads'] !== undefined && { threads: num(values, 'model-threads', 'int', 1) }),
  });
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

/** --context-size, else the SAE's metadata.context_size, else FALLBACK. */
export function saeContextSize(values: Record<string, unknown>, sae: Sae | undefined, fallback: number): number {
  const flag = num(values, 'context-size', 'int', 1);
  if (flag !== undefined) return flag;
  const m = sae?.config.metadata.context_size;
  return typeof m === 'number' && Number.isInteger(m) && m >= 1 ? m : fallback;
}
