// Checkpoints: everything needed to continue a run bit-exactly (parameters, Adam moments,
// firing statistics, step, tokens and the data position), in <output>/checkpoint/.
//
// Consistency without a directory swap: the tensors go to state-<step>.safetensors (written
// atomically), then checkpoint.json, which names that file, is replaced atomically; only then
// is the previous state file removed. A crash at any point leaves a checkpoint.json whose
// state file is complete.
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { writeAt, writeFileAtomic } from '../formats/fileIo.js';
import { SafetensorsReader } from '../formats/safetensors.js';
import { writeSafetensors, type SafetensorsTensorData } from '../formats/safetensorsWriter.js';
import type { TrainerStateName } from '../addon.js';
import type { SaeTrainer, TrainerConfig, TrainerState } from './trainer.js';

export const CHECKPOINT_DIR = 'checkpoint';
const META_FILE = 'checkpoint.json';
const FORMAT_VERSION = 1;

export interface CheckpointMeta {
  version: number;
  step: number;
  tokens: number;
  /** Rows of the (shuffled, looped) batch stream consumed so far. */
  dataPosition: number;
  trainer: TrainerConfig;
  /** The job settings that shape the run; a resume must use the same ones. */
  job: Record<string, unknown>;
  stateFile: string;
  savedAt: string;
}

function tensorData(name: TrainerStateName, a: Float32Array | Float64Array, trainer: TrainerConfig): SafetensorsTensorData {
  const { dIn, dSae } = trainer;
  const dOut = trainer.dOut ?? dIn;
  const base = name.replace(/^adam_[mv]\./, '');
  const shape = base === 'W_enc' ? [dIn, dSae] : base === 'W_dec' ? [dSae, dOut] : base === 'W_skip' ? [dOut, dIn] : [a.length];
  return a instanceof Float64Array ? { dtype: 'F64', shape, data: a } : { dtype: 'F32', shape, data: a };
}

/** Writes the trainer's state and `meta` into <output>/checkpoint/. */
export async function saveCheckpoint(
  output: string,
  trainer: SaeTrainer,
  meta: Omit<CheckpointMeta, 'version' | 'step' | 'tokens' | 'trainer' | 'stateFile' | 'savedAt'>,
): Promise<void> {
  const dir = join(output, CHECKPOINT_DIR);
  await mkdir(dir, { recursive: true });
  const state = trainer.state();
  const stateFile = `state-${state.step}.safetensors`;
  const tensors: Record<string, SafetensorsTensorData> = {};
  for (const [name, a] of Object.entries(state.tensors)) tensors[name] = tensorData(name as TrainerStateName, a, trainer.config);
  await writeSafetensors(join(dir, stateFile), tensors);
  const full: CheckpointMeta = {
    version: FORMAT_VERSION,
    step: state.step,
    tokens: state.tokens,
    trainer: trainer.config,
    stateFile,
    savedAt: new Date().toISOString(),
    ...meta,
  };
  const json = new TextEncoder().encode(`${JSON.stringify(full, null, 2)}\n`);
  await writeFileAtomic(join(dir, META_FILE), (fh) => writeAt(fh, json, 0));
  for (const name of await readdir(dir)) {
    if (name !== stateFile && name !== META_FILE && /^state-\d+\.safetensors$/.test(name)) await rm(join(dir, name), { force: true });
  }
}

/** Reads <output>/checkpoint/, or returns undefined when there is none. */
export async function loadCheckpoint(output: string): Promise<{ meta: CheckpointMeta; state: TrainerState } | undefined> {
  const dir = join(output, CHECKPOINT_DIR);
  const metaPath = join(dir, META_FILE);
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(text) as CheckpointMeta;
  } catch (e) {
    throw new FormatError(metaPath, `is not valid JSON (${(e as Error).message})`);
  }
  if (meta.version !== FORMAT_VERSION || typeof meta.stateFile !== 'string' || !Number.isSafeInteger(meta.step))
    throw new FormatError(metaPath, `is not a saekit checkpoint of format version ${FORMAT_VERSION}`);
  const statePath = join(dir, meta.stateFile);
  const reader = await SafetensorsReader.open(statePath);
  try {
    const tensors = {} as TrainerState['tensors'];
    for (const name of reader.tensors.keys()) {
      const a = await reader.readTensor(name);
      if (!(a instanceof Float32Array) && !(a instanceof Float64Array))
        throw new FormatError(statePath, `tensor ${name} is not F32/F64`);
      tensors[name as TrainerStateName] = a;
    }
    return { meta, state: { step: meta.step, tokens: meta.tokens, tensors } };
  } finally {
    await reader.close();
  }
}

/** Names the first job setting that differs between a checkpoint and the resumed run. */
export function checkResumable(meta: CheckpointMeta, trainer: TrainerConfig, job: Record<string, unknown>, where: string): void {
  const differ = (a: unknown, b: unknown) => JSON.stringify(a) !== JSON.stringify(b);
  for (const key of Object.keys(trainer) as (keyof TrainerConfig)[]) {
    if (key === 'inputScale' || key === 'outputScale') continue; // measured at the start; the checkpoint's values are used
    if (differ(meta.trainer[key], trainer[key]))
      throw new ValidationError(
        `cannot resume from ${where}: ${key} was ${JSON.stringify(meta.trainer[key])} there but is ${JSON.stringify(trainer[key])} now`,
      );
  }
  for (const key of Object.keys(job)) {
    const was = meta.job[key];
    const now = job[key];
    if (!differ(was, now)) continue;
    // Name the field inside an object setting (schedule.lr rather than the whole schedule).
    let name = key;
    let [a, b] = [was, now];
    if (was && now && typeof was === 'object' && typeof now === 'object') {
      const field = Object.keys(now).find((f) => differ((was as Record<string, unknown>)[f], (now as Record<string, unknown>)[f]));
      if (field !== undefined) [name, a, b] = [`${key}.${field}`, (was as Record<string, unknown>)[field], (now as Record<string, unknown>)[field]];
    }
    throw new ValidationError(`cannot resume from ${where}: ${name} was ${JSON.stringify(a)} there but is ${JSON.stringify(b)} now`);
  }
}
