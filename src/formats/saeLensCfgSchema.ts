// A strict schema of the cfg.json fields SAELens reads when it loads a directory, per
// architecture, and a checker that names the file and the field at fault. saekit's writer is
// held to it (test/formats.saelensRoundtrip.test.ts), so "loadable by SAELens" is a checked
// claim, not a hope. SAELens itself is not run here (no sae_lens package): the schema is read off
// its source.
//
// Where each rule comes from (SAELens source, jbloomAus/SAELens at 91ca16cc = release 6.18.0,
// unless said otherwise):
// - sae_lens/saes/sae.py, SAEConfig (the base dataclass, every architecture):
//     d_in: int, d_sae: int (no defaults: from_dict raises without them), dtype: str = "float32",
//     device: str = "cpu", apply_b_dec_to_input: bool = True,
//     normalize_activations: Literal["none", "expected_average_only_in", "constant_norm_rescale",
//     "layer_norm"] = "none" (checked in __post_init__), reshape_activations: Literal["none",
//     "hook_z"] = "none", metadata: SAEMetadata (any keys; missing ones read as None).
//   SAEConfig.from_dict keeps only the dataclass's fields (util.filter_valid_dataclass_fields),
//   so extra top-level keys are ignored, never an error.
// - sae_lens/loading/pretrained_sae_loaders.py:
//     read_sae_components_from_disk indexes DTYPE_MAP[cfg_dict["dtype"]] (constants.py: float32,
//     float64, float16, bfloat16 and their "torch."-prefixed spellings): dtype is required there.
//     SAE.load_from_disk (sae.py) indexes cfg_dict["architecture"]: required, and it must be a
//     registered name (sae_lens/__init__.py register_sae_class).
//     handle_config_defaulting reads sae_lens_version (top level, else metadata) and sends any
//     cfg without one, or older than 6.0.0-rc.0, through handle_pre_6_0_config, which keeps only
//     LLM_METADATA_KEYS from the TOP level as metadata: a v6 cfg.json must carry it.
//     LLM_METADATA_KEYS: model_name, hook_name, model_class_name, hook_head_index,
//     model_from_pretrained_kwargs, prepend_bos, exclude_special_tokens, neuronpedia_id,
//     context_size, seqpos_slice, dataset_path, sae_lens_version, sae_lens_training_version,
//     hook_name_out, hook_head_index_out.
// - metadata value types: sae_lens/config.py, LanguageModelSAERunnerConfig (model_name: str,
//   model_class_name: str, hook_name: str, hook_head_index: int | None, dataset_path: str,
//   context_size: int, seqpos_slice: tuple[int | None, ...], prepend_bos: bool,
//   model_from_pretrained_kwargs: dict | None, sae_lens_training_version: str,
//   exclude_special_tokens: bool | list[int]); hook_name_out / hook_head_index_out take
//   hook_name / hook_head_index's types.
// - sae_lens/saes/topk_sae.py, TopKSAEConfig: k: int = 100, rescale_acts_by_decoder_norm: bool =
//   False. k is required here: the default 100 would silently run another SAE.
// - sae_lens/saes/transcoder.py, TranscoderConfig: d_out: int = 768 (required here for the same
//   reason); __post_init__ raises when apply_b_dec_to_input is true. SkipTranscoderConfig and
//   JumpReLUTranscoderConfig add no fields.
// - "jumprelu_skip_transcoder" is NOT registered in 6.18.0; a later sae_lens/__init__.py (the
//   search index's copy of jbloomAus/SAELens, with AbsTopK, temporal and matching_pursuit) adds
//   register_sae_class("jumprelu_skip_transcoder", JumpReLUSkipTranscoder, ...). Its fields are
//   taken as TranscoderConfig's (its tests build it from build_transcoder_cfg).
// - Tensors: SAE.load_from_disk ends in load_state_dict (strict), so the safetensors file must
//   hold exactly the module's parameters: standard/topk/transcoder W_enc [d_in, d_sae], b_enc
//   [d_sae], W_dec [d_sae, d_out], b_dec [d_out]; jumprelu adds threshold [d_sae]
//   (jumprelu_sae.py; a TRAINING SAE's log_threshold is converted at save); gated has b_gate,
//   r_mag, b_mag and no b_enc (gated_sae.py); skip adds W_skip [d_out, d_in] (transcoder.py).
//   Tensors are cast to cfg dtype on load, so their stored dtype only has to be a float.
//
// "Required" below means: the loader fails without it, or its default would silently change
// the math. saekit writes every SAEConfig field anyway (as SAEConfig.to_dict does).
//
// saekit's own topk_transcoder / topk_skip_transcoder (SAELens 6.x has no TopK transcoder)
// are checked against the same fields but reported as not SAELens-loadable.

import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { SafetensorsReader } from './safetensors.js';
import { readJsonObject } from './saeTensors.js';

/** The SAELens release the schema was read from. */
export const SAELENS_SCHEMA_SOURCE = 'jbloomAus/SAELens 91ca16ccd0684e4dd6323cd4f23ded734339ec54 (6.18.0)';

type FieldType = 'int' | 'positive int' | 'bool' | 'string' | 'object' | 'int or null' | 'string or null' | 'object or null' | 'bool or int list' | 'int-or-null list';

interface Field {
  type: FieldType;
  required: boolean;
  /** Allowed values (strings). */
  enum?: readonly string[];
  /** Where SAELens reads it (for messages). */
  from: string;
}

export const SAELENS_DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'torch.float32', 'torch.float64', 'torch.float16', 'torch.bfloat16'] as const;
export const SAELENS_NORMALIZATIONS = ['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'] as const;

const BASE: Readonly<Record<string, Field>> = {
  architecture: { type: 'string', required: true, from: 'SAE.load_from_disk (cfg_dict["architecture"])' },
  d_in: { type: 'positive int', required: true, from: 'SAEConfig.d_in' },
  d_sae: { type: 'positive int', required: true, from: 'SAEConfig.d_sae' },
  dtype: { type: 'string', required: true, enum: SAELENS_DTYPES, from: 'read_sae_components_from_disk (DTYPE_MAP[cfg_dict["dtype"]])' },
  device: { type: 'string', required: true, from: 'SAEConfig.device' },
  apply_b_dec_to_input: { type: 'bool', required: true, from: 'SAEConfig.apply_b_dec_to_input (default true)' },
  normalize_activations: { type: 'string', required: true, enum: SAELENS_NORMALIZATIONS, from: 'SAEConfig.__post_init__' },
  reshape_activations: { type: 'string', required: true, enum: ['none', 'hook_z'], from: 'SAEConfig.reshape_activations' },
  metadata: { type: 'object', required: true, from: 'SAEConfig.metadata (and handle_config_defaulting reads metadata.sae_lens_version)' },
};

const TOPK: Readonly<Record<string, Field>> = {
  k: { type: 'positive int', required: true, from: 'TopKSAEConfig.k (default 100)' },
  rescale_acts_by_decoder_norm: { type: 'bool', required: false, from: 'TopKSAEConfig.rescale_acts_by_decoder_norm' },
};

const TRANSCODER: Readonly<Record<string, Field>> = {
  d_out: { type: 'positive int', required: true, from: 'TranscoderConfig.d_out (default 768)' },
};

/** metadata keys SAELens reads (LLM_METADATA_KEYS), their types when present. */
const METADATA: Readonly<Record<string, Field>> = {
  sae_lens_version: { type: 'string', required: true, from: 'handle_config_defaulting (a v6 cfg needs >= 6.0.0-rc.0)' },
  sae_lens_training_version: { type: 'string or null', required: false, from: 'LanguageModelSAERunnerConfig.sae_lens_training_version' },
  model_name: { type: 'string', required: false, from: 'LanguageModelSAERunnerConfig.model_name' },
  model_class_name: { type: 'string', required: false, from: 'LanguageModelSAERunnerConfig.model_class_name' },
  hook_name: { type: 'string', required: false, from: 'LanguageModelSAERunnerConfig.hook_name' },
  hook_head_index: { type: 'int or null', required: false, from: 'LanguageModelSAERunnerConfig.hook_head_index' },
  hook_name_out: { type: 'string', required: false, from: 'LLM_METADATA_KEYS hook_name_out' },
  hook_head_index_out: { type: 'int or null', required: false, from: 'LLM_METADATA_KEYS hook_head_index_out' },
  context_size: { type: 'int', required: false, from: 'LanguageModelSAERunnerConfig.context_size' },
  prepend_bos: { type: 'bool', required: false, from: 'LanguageModelSAERunnerConfig.prepend_bos' },
  dataset_path: { type: 'string', required: false, from: 'LanguageModelSAERunnerConfig.dataset_path' },
  neuronpedia_id: { type: 'string or null', required: false, from: 'LLM_METADATA_KEYS neuronpedia_id' },
  model_from_pretrained_kwargs: { type: 'object or null', required: false, from: 'LanguageModelSAERunnerConfig.model_from_pretrained_kwargs' },
  exclude_special_tokens: { type: 'bool or int list', required: false, from: 'LanguageModelSAERunnerConfig.exclude_special_tokens' },
  seqpos_slice: { type: 'int-or-null list', required: false, from: 'LanguageModelSAERunnerConfig.seqpos_slice' },
};

export interface SaeLensArchitectureSpec {
  fields: Readonly<Record<string, Field>>;
  /** The safetensors tensors load_state_dict (strict) needs, exactly. */
  tensors: readonly string[];
  transcoder: boolean;
  /** False for saekit's own names, which SAELens cannot load. */
  loadable: boolean;
  /** Why not loadable, or in which SAELens it is. */
  note?: string;
}

const SAE_TENSORS = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;

/** Per architecture: the fields SAELens's config class reads and the tensors its module holds. */
export const SAELENS_ARCHITECTURES: Readonly<Record<string, SaeLensArchitectureSpec>> = {
  standard: { fields: BASE, tensors: SAE_TENSORS, transcoder: false, loadable: true },
  topk: { fields: { ...BASE, ...TOPK }, tensors: SAE_TENSORS, transcoder: false, loadable: true },
  jumprelu: { fields: BASE, tensors: [...SAE_TENSORS, 'threshold'], transcoder: false, loadable: true },
  gated: { fields: BASE, tensors: ['W_enc', 'b_gate', 'r_mag', 'b_mag', 'W_dec', 'b_dec'], transcoder: false, loadable: true },
  transcoder: { fields: { ...BASE, ...TRANSCODER }, tensors: SAE_TENSORS, transcoder: true, loadable: true },
  skip_transcoder: { fields: { ...BASE, ...TRANSCODER }, tensors: [...SAE_TENSORS, 'W_skip'], transcoder: true, loadable: true },
  jumprelu_transcoder: { fields: { ...BASE, ...TRANSCODER }, tensors: [...SAE_TENSORS, 'threshold'], transcoder: true, loadable: true },
  jumprelu_skip_transcoder: {
    fields: { ...BASE, ...TRANSCODER },
    tensors: [...SAE_TENSORS, 'threshold', 'W_skip'],
    transcoder: true,
    loadable: true,
    note: 'registered in SAELens after 6.18.0 (6.18.0 itself refuses it)',
  },
  topk_transcoder: {
    fields: { ...BASE, ...TRANSCODER, ...TOPK },
    tensors: SAE_TENSORS,
    transcoder: true,
    loadable: false,
    note: "saekit's own name: SAELens has no TopK transcoder class, so SAE.load_from_disk cannot load it (saekit can)",
  },
  topk_skip_transcoder: {
    fields: { ...BASE, ...TRANSCODER, ...TOPK },
    tensors: [...SAE_TENSORS, 'W_skip'],
    transcoder: true,
    loadable: false,
    note: "saekit's own name: SAELens has no TopK transcoder class, so SAE.load_from_disk cannot load it (saekit can)",
  },
};

export interface SaeLensCfgReport {
  architecture: string;
  /** False for saekit-only architectures (see `note`). */
  loadable: boolean;
  note?: string;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `the integer ${v}` : `the number ${v}`;
  if (typeof v === 'boolean') return `the boolean ${v}`;
  return `a${typeof v === 'object' ? 'n' : ''} ${typeof v}`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function matches(type: FieldType, v: unknown): boolean {
  switch (type) {
    case 'int':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'positive int':
      return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
    case 'bool':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'object':
      return isObject(v);
    case 'int or null':
      return v === null || (typeof v === 'number' && Number.isSafeInteger(v));
    case 'string or null':
      return v === null || typeof v === 'string';
    case 'object or null':
      return v === null || isObject(v);
    case 'bool or int list':
      return typeof v === 'boolean' || (Array.isArray(v) && v.every((e) => typeof e === 'number' && Number.isSafeInteger(e)));
    case 'int-or-null list':
      return Array.isArray(v) && v.every((e) => e === null || (typeof e === 'number' && Number.isSafeInteger(e)));
  }
}

const TYPE_WORDS: Record<FieldType, string> = {
  int: 'an integer',
  'positive int': 'a positive integer',
  bool: 'a boolean',
  string: 'a string',
  object: 'an object',
  'int or null': 'an integer or null',
  'string or null': 'a string or null',
  'object or null': 'an object or null',
  'bool or int list': 'a boolean or a list of integers',
  'int-or-null list': 'a list of integers or nulls',
};

function checkFields(obj: Record<string, unknown>, fields: Readonly<Record<string, Field>>, prefix: string, errors: string[]): void {
  for (const [name, f] of Object.entries(fields)) {
    const at = `${prefix}${name}`;
    if (!Object.hasOwn(obj, name)) {
      if (f.required) errors.push(`missing field '${at}' (${TYPE_WORDS[f.type]}; read by ${f.from})`);
      continue;
    }
    const v = obj[name];
    if (!matches(f.type, v)) {
      errors.push(`field '${at}' must be ${TYPE_WORDS[f.type]} but is ${typeName(v)} (read by ${f.from})`);
      continue;
    }
    if (f.enum && !f.enum.includes(v as string)) errors.push(`field '${at}' is ${JSON.stringify(v)}, expected one of ${f.enum.join(', ')} (read by ${f.from})`);
  }
}

/** packaging.version's order for the X.Y.Z[-rc.N] versions SAELens writes: is V >= 6.0.0-rc.0? */
function isV6(v: string): boolean | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-.]?(a|b|rc|alpha|beta|dev)[-.]?(\d*))?/i.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) >= 6;
}

/**
 * The cfg.json problems, one line each; empty when `cfg` is a SAELens v6 cfg.json for its
 * architecture. saekit-only architectures are checked the same way (see SAELENS_ARCHITECTURES).
 */
export function saeLensCfgErrors(cfg: unknown): string[] {
  if (!isObject(cfg)) return [`the cfg must be a JSON object but is ${typeName(cfg)}`];
  const errors: string[] = [];
  const arch = cfg['architecture'];
  const spec = typeof arch === 'string' && Object.hasOwn(SAELENS_ARCHITECTURES, arch) ? SAELENS_ARCHITECTURES[arch]! : undefined;
  if (arch === undefined) errors.push(`missing field 'architecture' (one of ${Object.keys(SAELENS_ARCHITECTURES).join(', ')}; read by ${BASE['architecture']!.from})`);
  else if (!spec) errors.push(`field 'architecture' is ${typeName(arch)}, expected one of ${Object.keys(SAELENS_ARCHITECTURES).join(', ')} (SAELens's registered names)`);
  const fields = spec?.fields ?? BASE;
  checkFields(cfg, fields, '', errors);
  const meta = cfg['metadata'];
  if (isObject(meta)) {
    checkFields(meta, METADATA, 'metadata.', errors);
    const version = meta['sae_lens_version'];
    if (typeof version === 'string' && isV6(version) !== true) {
      errors.push(`field 'metadata.sae_lens_version' is ${JSON.stringify(version)}: SAELens reads a cfg older than 6.0.0-rc.0 (or unparseable) as a pre-6.0 config (handle_config_defaulting)`);
    }
  }
  if (spec && typeof cfg['k'] === 'number' && typeof cfg['d_sae'] === 'number' && Object.hasOwn(fields, 'k') && cfg['k'] > cfg['d_sae']) {
    errors.push(`field 'k' is ${cfg['k']}, larger than d_sae ${cfg['d_sae']} (torch.topk would fail)`);
  }
  if (spec?.transcoder && cfg['apply_b_dec_to_input'] === true) {
    errors.push(`field 'apply_b_dec_to_input' is true for a ${String(arch)} (TranscoderConfig.__post_init__ raises: "apply_b_dec_to_input is not supported for transcoders")`);
  }
  return errors;
}

export interface CheckSaeLensCfgOptions {
  /** Accept saekit's own topk_transcoder names (reported as loadable: false) instead of throwing. */
  allowSaekitOnly?: boolean;
}

/**
 * Checks a cfg.json object against the schema; throws a FormatError naming `where` (the file)
 * and every field at fault. A saekit-only architecture throws too, unless allowSaekitOnly.
 */
export function checkSaeLensCfg(cfg: unknown, where: string, opts: CheckSaeLensCfgOptions = {}): SaeLensCfgReport {
  const errors = saeLensCfgErrors(cfg);
  if (errors.length > 0) throw new FormatError(where, `not a SAELens cfg.json: ${errors.join('; ')}`);
  const arch = (cfg as Record<string, unknown>)['architecture'] as string;
  const spec = SAELENS_ARCHITECTURES[arch]!;
  if (!spec.loadable && opts.allowSaekitOnly !== true) throw new FormatError(where, `architecture '${arch}' is not SAELens-loadable: ${spec.note}`);
  return { architecture: arch, loadable: spec.loadable, ...(spec.note !== undefined && { note: spec.note }) };
}

/** Tensor names and shapes as a safetensors header gives them. */
export type TensorShapes = Readonly<Record<string, { dtype: string; shape: readonly number[] }>>;

const FLOAT_DTYPES = ['F16', 'BF16', 'F32', 'F64'];

/**
 * The weights' problems against a checked cfg: exactly the tensors the architecture's module
 * holds (load_state_dict is strict), each of its shape, each a float.
 */
export function saeLensTensorErrors(cfg: Record<string, unknown>, tensors: TensorShapes): string[] {
  const spec = SAELENS_ARCHITECTURES[cfg['architecture'] as string];
  if (!spec) return [`unknown architecture ${typeName(cfg['architecture'])}`];
  const dIn = cfg['d_in'] as number;
  const dSae = cfg['d_sae'] as number;
  const dOut = spec.transcoder ? (cfg['d_out'] as number) : dIn;
  const shapes: Record<string, number[]> = {
    W_enc: [dIn, dSae], b_enc: [dSae], W_dec: [dSae, dOut], b_dec: [dOut], threshold: [dSae], W_skip: [dOut, dIn],
    b_gate: [dSae], r_mag: [dSae], b_mag: [dSae],
  };
  const errors: string[] = [];
  for (const name of spec.tensors) {
    const t = tensors[name];
    if (!t) {
      errors.push(`missing tensor '${name}' (${String(cfg['architecture'])} holds ${spec.tensors.join(', ')})`);
      continue;
    }
    const want = shapes[name]!;
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) errors.push(`tensor '${name}' has shape [${t.shape.join(', ')}], expected [${want.join(', ')}]`);
    if (!FLOAT_DTYPES.includes(t.dtype)) errors.push(`tensor '${name}' has dtype ${t.dtype}, expected a float (${FLOAT_DTYPES.join(', ')})`);
  }
  for (const name of Object.keys(tensors)) {
    if (name !== '__metadata__' && !spec.tensors.includes(name)) errors.push(`unexpected tensor '${name}' (load_state_dict is strict: ${String(cfg['architecture'])} holds ${spec.tensors.join(', ')})`);
  }
  return errors;
}

/**
 * Checks a whole SAELens directory: cfg.json against the schema, sae_weights.safetensors
 * against the architecture's tensors, sparsity.safetensors (when present) against d_sae.
 * Throws a FormatError naming the file at fault.
 */
export async function checkSaeLensDir(dir: string, opts: CheckSaeLensCfgOptions = {}): Promise<SaeLensCfgReport> {
  const cfgFile = join(dir, 'cfg.json');
  const cfg = await readJsonObject(cfgFile);
  const report = checkSaeLensCfg(cfg, cfgFile, opts);
  const weightsFile = join(dir, 'sae_weights.safetensors');
  const shapes = async (file: string): Promise<Record<string, { dtype: string; shape: readonly number[] }>> => {
    const reader = await SafetensorsReader.open(file);
    try {
      return Object.fromEntries([...reader.tensors].map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]));
    } finally {
      await reader.close();
    }
  };
  const errors = saeLensTensorErrors(cfg, await shapes(weightsFile));
  if (errors.length > 0) throw new FormatError(weightsFile, `not loadable as the cfg.json's ${report.architecture}: ${errors.join('; ')}`);
  const sparsityFile = join(dir, 'sparsity.safetensors');
  const hasSparsity = await stat(sparsityFile).then(
    () => true,
    (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? false : Promise.reject(e)),
  );
  if (hasSparsity) {
    const sparsity = await shapes(sparsityFile);
    const s = sparsity['sparsity'];
    if (!s || s.shape.length !== 1 || s.shape[0] !== cfg['d_sae']) {
      throw new FormatError(sparsityFile, `expected one tensor 'sparsity' [${String(cfg['d_sae'])}] (SAELens reads f.get_tensor("sparsity"))`);
    }
  }
  return report;
}
