// train(): a whole SAE (or transcoder) training job. Data streams from activation files (or
// any RowSource) through a window-shuffled BatchStream; every step runs natively; metrics go
// to <output>/metrics.jsonl, checkpoints to <output>/checkpoint/, and the final SAE is saved
// as a SAELens directory at <output> (cfg.json, sae_weights.safetensors, sparsity.safetensors).
//
// trainSweep(): several SAEs from ONE read of the data (a hyper-parameter sweep): every batch
// is read, shuffled and converted once and then fed to each trainer in turn, so the sweep pays
// the I/O (or the language model's forward passes, for a live source) once. Each run keeps its
// own output directory, metrics, checkpoints and resume.
//
// Exact resume: the batch stream is a pure function of (seed, rows consumed), parameters and
// optimizer state come back bit for bit, and the native step does not depend on the thread
// count, so a resumed run continues exactly as the uninterrupted one would have.
import { readActivationsManifest } from '../model/activations.js';
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { NonFiniteInputError, ValidationError, expected } from '../errors.js';
import { saveSaeLens, type SaveDtype } from '../formats/saveSaeLens.js';
import { resolveDevice, resolveTrainingDevice, type Device } from '../system.js';
import { CHECKPOINT_DIR, checkResumable, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { BatchStream, openRowSource, splitPairs, zipRowSources, type RowSource } from './data.js';
import { resampleDeadLatents } from './resample.js';
import { expectedAverageScale, initParams, type BDecInit } from './init.js';
import { learningRate, validateSchedule, type DecayKind, type LrSchedule } from './schedule.js';
import { SaeTrainer, defaultTrainerConfig, type StepMetrics, type TrainArchitecture, type TrainerConfig } from './trainer.js';

export type TrainJobArchitecture = TrainArchitecture | 'matryoshka';
export type TrainKind = 'sae' | 'transcoder' | 'skip-transcoder';

export interface TrainJobOptions {
  /**
   * topk (default), batchtopk (saved as jumprelu), standard (relu + L1), jumprelu (STE + L0),
   * or matryoshka (Matryoshka batch top-k as SAELens trains it; saved as jumprelu).
   */
  architecture?: TrainJobArchitecture;
  /** matryoshka: the prefix widths (default dSae/16, dSae/4, dSae; each >= k; the last = dSae). */
  matryoshkaWidths?: number[];
  /**
   * sae (default), or a transcoder that predicts TARGET rows from the input rows (with a
   * trained linear skip term for skip-transcoder). Saved under SAELens's transcoder names.
   */
  kind?: TrainKind;
  /**
   * Transcoders: the target activations (file, directory or RowSource), row-aligned with the
   * input. Default: the input dump's paired output (`saekit activations --hook-out`).
   */
  target?: string | RowSource;
  /** safetensors tensor of the target files (default: the dump's tensor_out). */
  targetTensor?: string;
  /** Transcoders: the output hook (default: the dump's hook_name_out). */
  hookNameOut?: string;
  /**
   * Dead-latent resampling every this many steps (0 = off, the default), beside or instead of
   * AuxK: dead latents restart toward high-loss rows of the current batch (see resample.ts).
   */
  resampleEvery?: number;
  /** standard: the L1 coefficient (default 5, for inputs scaled to norm sqrt(d_in)). */
  l1Coeff?: number;
  /** jumprelu: the L0 coefficient (default 0.5), the estimators' bandwidth (0.05) and the
   * initial threshold (0.1). */
  l0Coeff?: number;
  bandwidth?: number;
  initThreshold?: number;
  /** Activation file or directory (.npy / .safetensors shards), or a RowSource (live data). */
  input: string | RowSource;
  /** safetensors tensor name, when the files hold several. */
  tensor?: string;
  /** Output directory: the SAE, metrics.jsonl and checkpoint/. */
  output: string;
  /** Latents per row (topk) or per row on average (batchtopk); required by both, unused by standard. */
  k?: number;
  /** Latents; or give expansion (dSae = expansion * dIn). */
  dSae?: number;
  expansion?: number;
  /** Tokens (rows) to train on; the data loops when it is shorter. */
  tokens: number;
  batchSize?: number;
  /** Peak learning rate; default 2e-4 / sqrt(dSae / 2^14) (Gao et al.'s scaling). */
  lr?: number;
  /** Default 5% of the steps, at most 1000. */
  warmupSteps?: number;
  decay?: DecayKind;
  /** Fraction of the steps at the end over which the rate decays (default 0.2). */
  decayFraction?: number;
  lrEnd?: number;
  kAux?: number;
  auxCoeff?: number;
  deadTokens?: number;
  clip?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** expected_average_only_in (default): inputs scaled to mean norm sqrt(d_in), folded in at save. */
  normalize?: 'expected_average_only_in' | 'none';
  bDecInit?: BDecInit;
  /** Rows of the first sample used for the input scale and b_dec (default 4096). */
  initRows?: number;
  seed?: number;
  /** Rows per shuffle window (default: ~64 MiB of rows, at least one batch); 0 = no shuffle. */
  shuffleWindow?: number;
  /** Metrics every this many steps (default 100; the last step always). */
  logEvery?: number;
  /** Checkpoint every this many steps (default 1000; 0 = only at the end). */
  checkpointEvery?: number;
  /** Continue from <output>/checkpoint when it exists. */
  resume?: boolean;
  device?: Device;
  saveDtype?: SaveDtype;
  hookName?: string;
  modelName?: string;
  /** Called after every step. */
  onStep?: (p: TrainProgress) => void;
  /** Called when a checkpoint has been saved (at STEP; OUTPUT says which run of a sweep). */
  onCheckpoint?: (p: { step: number; totalSteps: number; output: string }) => void;
  /** Called with every metrics record written to metrics.jsonl. */
  onLog?: (record: MetricsRecord) => void;
  /** Stop (with a checkpoint) after this many steps in this call, as an interrupted run would. */
  stopAfterSteps?: number;
  /** Aborting stops after the current step with a checkpoint. */
  signal?: AbortSignal;
}

export interface TrainProgress {
  step: number;
  totalSteps: number;
  tokens: number;
  totalTokens: number;
  tokensPerSecond: number;
}

export interface MetricsRecord {
  step: number;
  tokens: number;
  lr: number;
  mse: number;
  fvu: number;
  explained_variance: number;
  l0: number;
  /** matryoshka: the inner prefixes' MSE, summed. */
  inner_mse?: number;
  /** With resampleEvery: latents resampled so far in this call. */
  resampled?: number;
  dead_fraction: number;
  aux_loss: number;
  sparsity_loss: number;
  grad_norm: number;
  tokens_per_second: number;
  elapsed_s: number;
}

export interface TrainResult {
  steps: number;
  tokens: number;
  /** true when the run stopped early (stopAfterSteps or signal) with a checkpoint, unsaved. */
  stopped: boolean;
  last: StepMetrics | undefined;
  /** Training throughput of this call (tokens / second of step time, data loading included). */
  tokensPerSecond: number;
  seconds: number;
  trainer: TrainerConfig;
  output: string;
}

const METRICS_FILE = 'metrics.jsonl';

function fraction(v: unknown, name: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw expected('a number in [0, 1]', name, v);
  return v;
}

/** The first non-finite value of [rows, dIn] as {row, col}, or undefined. */
function firstNonFinite(a: Float32Array, dIn: number): { row: number; col: number } | undefined {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return { row: Math.floor(i / dIn), col: i % dIn };
  return undefined;
}

function positiveInt(v: unknown, name: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw expected('a positive integer', name, v);
  return v as number;
}

async function readFirstRows(source: RowSource, rows: number): Promise<Float32Array> {
  const want = rows * source.dIn;
  const out = new Float32Array(want);
  let have = 0;
  for await (const chunk of source.chunks(0)) {
    const n = Math.min(chunk.length, want - have);
    out.set(chunk.subarray(0, n), have);
    have += n;
    if (have >= want) break;
  }
  return out.subarray(0, have - (have % source.dIn));
}

/** Keeps metrics.jsonl consistent with a checkpoint: drops records past its step. */
async function truncateMetrics(file: string, step: number): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return;
  }
  const kept = text.split('\n').filter((line) => {
    if (line.trim() === '') return false;
    try {
      return (JSON.parse(line) as MetricsRecord).step <= step;
    } catch {
      return false;
    }
  });
  await writeFile(file, kept.length ? `${kept.join('\n')}\n` : '');
}

/** The options every run of a sweep shares: they shape the one stream of batches. */
const SHARED_KEYS = ['input', 'tensor', 'target', 'targetTensor', 'tokens', 'batchSize', 'seed', 'shuffleWindow', 'initRows', 'kind', 'device', 'signal', 'stopAfterSteps'] as const;

/** One training run: a trainer, its settings and its output directory. */
interface Run {
  o: TrainJobOptions;
  trainer: SaeTrainer;
  config: TrainerConfig;
  schedule: LrSchedule;
  totalSteps: number;
  job: Record<string, unknown>;
  metricsFile: string;
  startTokens: number;
  last: StepMetrics | undefined;
  intervalStart: number;
  intervalTokens: number;
  stepSeconds: number;
  resampleEvery: number;
  resampled: number;
}

/** Default Matryoshka widths: dSae/16, dSae/4, dSae, each at least k, strictly increasing. */
function defaultWidths(dSae: number, k: number): number[] {
  const out: number[] = [];
  for (const w of [Math.floor(dSae / 16), Math.floor(dSae / 4), dSae]) {
    const v = Math.max(w, k);
    if (v <= dSae && (out.length === 0 || v > out[out.length - 1]!)) out.push(v);
  }
  return out;
}

export async function train(o: TrainJobOptions): Promise<TrainResult> {
  return (await trainSweep([o]))[0]!;
}

/**
 * Trains every run of RUNS from one stream of batches (see the top of this file). The runs
 * must agree on what shapes the stream (input, tensor, target, targetTensor, tokens,
 * batchSize, seed, shuffleWindow, initRows, kind, device; signal and stopAfterSteps stop them
 * all) and need distinct outputs; anything else (k, dSae, architecture, lr, coefficients ...)
 * may differ. Returns one result per run, in order.
 */
export async function trainSweep(runs: TrainJobOptions[]): Promise<TrainResult[]> {
  if (!Array.isArray(runs) || runs.length === 0) throw expected('a non-empty array of training jobs', 'runs', runs);
  const o0 = runs[0]!;
  runs.forEach((r, i) => {
    for (const key of SHARED_KEYS) {
      if (r[key] !== o0[key]) throw new ValidationError(`run ${i} of the sweep sets ${key} to ${String(r[key])} but run 0 to ${String(o0[key])}: every run reads the same stream`);
    }
    if (typeof r.output !== 'string' || r.output === '') throw expected('a directory path', `output of run ${i}`, r.output);
  });
  const outputs = new Set(runs.map((r) => resolve(r.output)));
  if (outputs.size !== runs.length) throw new ValidationError('the runs of a sweep need distinct output directories');
  if (o0.stopAfterSteps !== undefined) positiveInt(o0.stopAfterSteps, 'stopAfterSteps');
  for (const r of runs) {
    const outputKind = await stat(r.output).then((st) => (st.isDirectory() ? 'dir' : 'file'), () => 'absent');
    if (outputKind === 'file') throw new ValidationError(`output ${r.output} is a file; training writes a directory there`);
  }
  const kind = o0.kind ?? 'sae';
  if (!['sae', 'transcoder', 'skip-transcoder'].includes(kind)) throw expected("'sae', 'transcoder' or 'skip-transcoder'", 'kind', kind);
  const transcoder = kind !== 'sae';
  const tokens = positiveInt(o0.tokens, 'tokens');
  const batchSize = positiveInt(o0.batchSize ?? 4096, 'batchSize');
  const seed = o0.seed ?? 42;
  if (!Number.isSafeInteger(seed)) throw expected('an integer', 'seed', seed);
  // 'auto' trains with the CUDA trainer (topk, batchtopk, standard and jumprelu SAEs,
  // native/cuda/cuda_trainer.h) only where its self-test against the CPU trainer passed
  // (resolveTrainingDevice, per run: transcoders and matryoshka train on the CPU); 'cuda' asks
  // for it outright (refused without a usable GPU; transcoders and matryoshka by name).
  const device: Device = o0.device ?? 'auto';
  if (device !== 'auto') resolveDevice(device);  // fail fast, before reading any input

  const inputSource = typeof o0.input === 'string' ? await openRowSource(o0.input, o0.tensor !== undefined ? { tensor: o0.tensor } : {}) : o0.input;
  const inputName = typeof o0.input === 'string' ? resolve(o0.input) : 'a live source';
  // A dump from `saekit activations` says which model and hook it came from, and how it was
  // tokenized: the SAE's cfg.json carries that on, so `saekit features`/`eval` need no flags.
  const dump = typeof o0.input === 'string' ? await readActivationsManifest(o0.input).catch(() => undefined) : undefined;
  const opened: RowSource[] = typeof o0.input === 'string' ? [inputSource] : [];
  const live: Run[] = [];
  try {
    // Transcoders: the target rows, zipped beside the input so the shuffle keeps the pairs.
    let source: RowSource = inputSource;
    let targetName = '';
    const dIn = inputSource.dIn;
    let dOut = dIn;
    if (transcoder) {
      const dumpOut = dump as (typeof dump & { tensor_out?: string; hook_name_out?: string }) | undefined;
      let targetSource: RowSource;
      if (o0.target !== undefined) {
        targetSource = typeof o0.target === 'string' ? await openRowSource(o0.target, o0.targetTensor !== undefined ? { tensor: o0.targetTensor } : {}) : o0.target;
        if (typeof o0.target === 'string') opened.push(targetSource);
        targetName = typeof o0.target === 'string' ? resolve(o0.target) : 'a live target source';
      } else if (typeof o0.input === 'string' && (o0.targetTensor ?? dumpOut?.tensor_out) !== undefined) {
        targetSource = await openRowSource(o0.input, { tensor: (o0.targetTensor ?? dumpOut!.tensor_out)! });
        opened.push(targetSource);
        targetName = `${inputName} (tensor ${o0.targetTensor ?? dumpOut!.tensor_out})`;
      } else {
        throw new ValidationError(
          `a ${kind} needs target rows: give target (--target PATH), or train on a paired dump from \`saekit activations --hook-out\` (${inputName} has no tensor_out)`,
        );
      }
      dOut = targetSource.dIn;
      source = zipRowSources(inputSource, targetSource, { a: `the input ${inputName}`, b: `the target ${targetName}` });
    }
    const pairWidth = source.dIn;
    const sampleRows = positiveInt(o0.initRows ?? 4096, 'initRows');
    const defaultWindow = Math.max(batchSize, Math.floor((64 << 20) / (4 * pairWidth)));
    const shuffleWindow = o0.shuffleWindow ?? defaultWindow;
    const totalSteps = Math.ceil(tokens / batchSize);
    let sample: { x: Float32Array; y: Float32Array | undefined } | undefined;
    const firstSample = async () => {
      if (sample) return sample;
      const rows = await readFirstRows(source, sampleRows);
      if (rows.length === 0) throw new ValidationError(`no activation rows in ${inputName}`);
      const bad = firstNonFinite(rows, pairWidth);
      if (bad) {
        const inTarget = bad.col >= dIn;
        throw new NonFiniteInputError(`${inTarget ? targetName : inputName} (first sample, used for initialization)`, bad.row, inTarget ? bad.col - dIn : bad.col);
      }
      sample = transcoder ? splitPairs(rows, dIn, dOut) : { x: rows, y: undefined };
      return sample;
    };

    for (const o of runs) live.push(await setupRun(o, { dIn, dOut, kind, batchSize, seed, shuffleWindow, sampleRows, totalSteps, inputName, targetName, device, firstSample }));

    const firstStep = Math.min(...live.map((r) => r.trainer.step));
    const stream = new BatchStream(source, { batchSize, shuffleWindow, seed, position: firstStep * batchSize });
    const save = async (r: Run) => {
      await saveCheckpoint(r.o.output, r.trainer, { dataPosition: r.trainer.step * batchSize, job: r.job });
      r.o.onCheckpoint?.({ step: r.trainer.step, totalSteps, output: r.o.output });
    };
    const started = performance.now();
    let stopped = false;
    let stepsThisCall = 0;
    let x: Float32Array | undefined;
    let y: Float32Array | undefined;
    // The next batch is read while the current step computes.
    let pending = firstStep < totalSteps ? stream.next() : Promise.resolve(undefined);
    if (o0.signal?.aborted && firstStep < totalSteps) {
      for (const r of live) if (r.trainer.step < totalSteps) await save(r);
      stopped = true;
    }
    for (let step = firstStep; !stopped && step < totalSteps; step++) {
      const batch = await pending;
      if (batch === undefined) throw new ValidationError(`${inputName} ran out of rows at step ${step + 1}`);
      const next = step + 1 < totalSteps ? stream.next() : Promise.resolve(undefined);
      next.catch(() => undefined); // surfaced when awaited
      if (transcoder) ({ x, y } = splitPairs(batch, dIn, dOut, x, y));
      else x = batch;
      const lrOf = (r: Run) => learningRate(r.schedule, step);
      for (const r of live) {
        if (r.trainer.step !== step) continue; // a run resumed from a later checkpoint waits for the stream
        const t0 = performance.now();
        try {
          r.last = await r.trainer.trainStep(x, lrOf(r), y);
        } catch (e) {
          if (e instanceof NonFiniteInputError)
            throw new NonFiniteInputError(
              `${e.message.startsWith('training target') ? targetName : inputName}: the batch of step ${step + 1} (rows ${step * batchSize}..${(step + 1) * batchSize - 1} of the shuffled stream)`,
              e.row,
              e.col,
            );
          throw e;
        }
        const now = performance.now();
        if (r.resampleEvery > 0 && r.trainer.step % r.resampleEvery === 0 && r.trainer.step < totalSteps)
          r.resampled += (await resampleDeadLatents(r.trainer, x, y, { seed })).latents.length;
        r.stepSeconds += (now - t0) / 1000;
        const rate = ((r.trainer.tokens - r.startTokens) * 1000) / Math.max(1e-9, now - started);
        r.o.onStep?.({ step: r.trainer.step, totalSteps, tokens: r.trainer.tokens, totalTokens: totalSteps * batchSize, tokensPerSecond: rate });
        if (r.trainer.step % positiveInt(r.o.logEvery ?? 100, 'logEvery') === 0 || r.trainer.step === totalSteps) await logMetrics(r, lrOf(r), now, started);
      }
      pending = next;
      stepsThisCall += 1;
      const interrupted = (o0.stopAfterSteps !== undefined && stepsThisCall >= o0.stopAfterSteps) || o0.signal?.aborted === true;
      for (const r of live) {
        const every = r.o.checkpointEvery ?? 1000;
        if (r.trainer.step === step + 1 && (r.trainer.step === totalSteps || interrupted || (every > 0 && r.trainer.step % every === 0))) await save(r);
      }
      if (interrupted && step + 1 < totalSteps) stopped = true;
    }
    await stream.close();
    const seconds = (performance.now() - started) / 1000;
    const results: TrainResult[] = [];
    for (const r of live) {
      if (!stopped) await saveRun(r, { inputName, targetName, dump, transcoder });
      results.push({
        steps: r.trainer.step,
        tokens: r.trainer.tokens,
        stopped,
        last: r.last,
        tokensPerSecond: seconds > 0 ? (r.trainer.tokens - r.startTokens) / seconds : 0,
        seconds,
        trainer: r.trainer.config,
        output: r.o.output,
      });
    }
    return results;
  } finally {
    for (const r of live) r.trainer.dispose();
    for (const s of opened) await s.close();
  }
}

interface SharedSetup {
  dIn: number;
  dOut: number;
  kind: TrainKind;
  batchSize: number;
  seed: number;
  shuffleWindow: number;
  sampleRows: number;
  totalSteps: number;
  inputName: string;
  targetName: string;
  device: Device;
  firstSample: () => Promise<{ x: Float32Array; y: Float32Array | undefined }>;
}

/** Validates one run's settings and creates (or resumes) its trainer. */
async function setupRun(o: TrainJobOptions, sh: SharedSetup): Promise<Run> {
  const { dIn, dOut, kind, batchSize, seed, totalSteps } = sh;
  const transcoder = kind !== 'sae';
  const jobArch = o.architecture ?? 'topk';
  if (!['topk', 'batchtopk', 'standard', 'jumprelu', 'matryoshka'].includes(jobArch))
    throw expected("'topk', 'batchtopk', 'standard', 'jumprelu' or 'matryoshka'", 'architecture', jobArch);
  const architecture: TrainArchitecture = jobArch === 'matryoshka' ? 'batchtopk' : jobArch;
  const perRowK = architecture === 'topk' || architecture === 'batchtopk';
  const k = !perRowK && o.k === undefined ? 0 : positiveInt(o.k, 'k');
  if (o.dSae !== undefined && o.expansion !== undefined) throw new ValidationError('give dSae or expansion, not both');
  const dSae = o.dSae !== undefined ? positiveInt(o.dSae, 'dSae') : positiveInt(o.expansion ?? 32, 'expansion') * dIn;
  if (k > dSae) throw new ValidationError(`k (${k}) must be <= d_sae (${dSae})`);
  if (o.matryoshkaWidths !== undefined && jobArch !== 'matryoshka') throw new ValidationError(`matryoshkaWidths need architecture 'matryoshka' (got '${jobArch}')`);
  const trainingDevice = resolveTrainingDevice(sh.device, { transcoder, matryoshka: jobArch === 'matryoshka' });
  const schedule: LrSchedule = {
    lr: o.lr ?? 2e-4 / Math.sqrt(dSae / 2 ** 14),
    totalSteps,
    warmupSteps: o.warmupSteps ?? Math.min(1000, Math.floor(totalSteps * 0.05)),
    decay: o.decay ?? 'linear',
    decaySteps: Math.floor(totalSteps * fraction(o.decayFraction ?? 0.2, 'decayFraction')),
    lrEnd: o.lrEnd ?? 0,
  };
  validateSchedule(schedule);
  if (schedule.lrEnd > schedule.lr) throw new ValidationError(`lrEnd (${schedule.lrEnd}) must not exceed lr (${schedule.lr})`);
  const defaults = defaultTrainerConfig(dIn, dSae, k, architecture);
  const normalize = o.normalize ?? 'expected_average_only_in';
  if (!['expected_average_only_in', 'none'].includes(normalize)) throw expected("'expected_average_only_in' or 'none'", 'normalize', normalize);
  const bDecInit = o.bDecInit ?? 'geometric_median';
  if (!['geometric_median', 'mean', 'zeros'].includes(bDecInit)) throw expected("'geometric_median', 'mean' or 'zeros'", 'bDecInit', bDecInit);
  const config: TrainerConfig = {
    ...defaults,
    kAux: o.kAux ?? defaults.kAux,
    auxCoeff: o.auxCoeff ?? defaults.auxCoeff,
    deadTokens: o.deadTokens ?? defaults.deadTokens,
    clip: o.clip ?? defaults.clip,
    beta1: o.beta1 ?? defaults.beta1,
    beta2: o.beta2 ?? defaults.beta2,
    eps: o.eps ?? defaults.eps,
    l1Coeff: o.l1Coeff ?? defaults.l1Coeff,
    l0Coeff: o.l0Coeff ?? defaults.l0Coeff,
    bandwidth: o.bandwidth ?? defaults.bandwidth,
    ...(transcoder && { transcoder: true, dOut, outputScale: 1 }),
    ...(kind === 'skip-transcoder' && { skip: true }),
    ...(jobArch === 'matryoshka' && { matryoshkaWidths: o.matryoshkaWidths ?? defaultWidths(dSae, k) }),
  };
  const initThreshold = o.initThreshold ?? 0.1;
  if (!(initThreshold > 0) || !Number.isFinite(initThreshold)) throw expected('a positive number', 'initThreshold', initThreshold);
  positiveInt(o.logEvery ?? 100, 'logEvery');
  const resampleEvery = o.resampleEvery ?? 0;
  if (!Number.isSafeInteger(resampleEvery) || resampleEvery < 0) throw expected('an integer >= 0', 'resampleEvery', resampleEvery);
  const checkpointEvery = o.checkpointEvery ?? 1000;
  if (!Number.isSafeInteger(checkpointEvery) || checkpointEvery < 0) throw expected('an integer >= 0', 'checkpointEvery', checkpointEvery);
  // What shapes the run: a resume must match it exactly.
  const job = {
    batchSize,
    seed,
    shuffleWindow: sh.shuffleWindow,
    normalize,
    bDecInit,
    initRows: sh.sampleRows,
    input: sh.inputName,
    ...(transcoder && { target: sh.targetName }),
    schedule,
    ...(architecture === 'jumprelu' && { initThreshold }),
    ...(resampleEvery > 0 && { resampleEvery }),
  };

  await mkdir(o.output, { recursive: true });
  const metricsFile = join(o.output, METRICS_FILE);
  const checkpoint = o.resume ? await loadCheckpoint(o.output) : undefined;
  let trainer: SaeTrainer;
  if (checkpoint) {
    checkResumable(checkpoint.meta, config, job, join(o.output, CHECKPOINT_DIR));
    config.inputScale = checkpoint.meta.trainer.inputScale;
    if (transcoder) config.outputScale = checkpoint.meta.trainer.outputScale ?? 1;
    // Params are replaced by the checkpoint's at once; zeros avoid a wasted initialization.
    const zeros = {
      W_enc: new Float32Array(dIn * dSae),
      b_enc: new Float32Array(dSae),
      W_dec: new Float32Array(dSae * dOut),
      b_dec: new Float32Array(dOut),
      log_threshold: new Float32Array(dSae),
    };
    trainer = await SaeTrainer.create(config, zeros, trainingDevice);
    trainer.loadState(checkpoint.state);
    await truncateMetrics(metricsFile, checkpoint.meta.step);
  } else {
    const { x: rawX, y: rawY } = await sh.firstSample();
    const scale = (a: Float32Array, width: number) => (normalize === 'expected_average_only_in' ? expectedAverageScale(a, width) : 1);
    config.inputScale = scale(rawX, dIn);
    const xs = rawX.map((v) => v * config.inputScale);
    let ys: Float32Array | undefined;
    if (transcoder) {
      // The target is scaled on its own (to mean norm sqrt(d_out)); both scales fold into the saved weights.
      config.outputScale = scale(rawY!, dOut);
      ys = rawY!.map((v) => v * config.outputScale!);
    }
    const decoderNorm = architecture === 'standard' ? 0.1 : 1;
    const init = initParams({
      dIn,
      dSae,
      seed,
      bDecInit,
      sample: xs,
      decoderNorm,
      ...(architecture === 'jumprelu' && { initThreshold }),
      ...(transcoder && { dOut, targetSample: ys!, skip: kind === 'skip-transcoder' }),
    });
    trainer = await SaeTrainer.create(config, init, trainingDevice);
    await writeFile(metricsFile, '');
  }
  const now = performance.now();
  return { o, trainer, config, schedule, totalSteps, job, metricsFile, startTokens: trainer.tokens, last: undefined, intervalStart: now, intervalTokens: trainer.tokens, stepSeconds: 0, resampleEvery, resampled: 0 };
}

async function logMetrics(r: Run, lr: number, now: number, started: number): Promise<void> {
  const last = r.last!;
  const record: MetricsRecord = {
    step: r.trainer.step,
    tokens: r.trainer.tokens,
    lr,
    mse: last.mse,
    fvu: last.fvu,
    explained_variance: last.explainedVariance,
    l0: last.l0,
    ...(r.config.matryoshkaWidths && { inner_mse: last.innerMse }),
    ...(r.resampleEvery > 0 && { resampled: r.resampled }),
    dead_fraction: last.deadFraction,
    aux_loss: last.auxLoss,
    sparsity_loss: last.sparsityLoss,
    grad_norm: last.gradNorm,
    tokens_per_second: ((r.trainer.tokens - r.intervalTokens) * 1000) / Math.max(1e-9, now - r.intervalStart),
    elapsed_s: (now - started) / 1000,
  };
  r.intervalStart = now;
  r.intervalTokens = r.trainer.tokens;
  await appendFile(r.metricsFile, `${JSON.stringify(record)}\n`);
  r.o.onLog?.(record);
}

async function saveRun(
  r: Run,
  ctx: { inputName: string; targetName: string; dump: Awaited<ReturnType<typeof readActivationsManifest>> | undefined; transcoder: boolean },
): Promise<void> {
  const { o, trainer, config } = r;
  const dump = ctx.dump as (typeof ctx.dump & { hook_name_out?: string }) | undefined;
  const metadata: Record<string, unknown> = {
    dataset_path: ctx.inputName,
    ...(ctx.transcoder && { target_path: ctx.targetName, output_scale_folded: config.outputScale }),
    trained_with: 'saekit',
    training_tokens: trainer.tokens,
    input_scale_folded: config.inputScale,
    ...(config.matryoshkaWidths && { matryoshka_widths: config.matryoshkaWidths, trained_architecture: 'matryoshka_batchtopk' }),
    ...(dump && { context_size: dump.context_size, prepend_bos: dump.prepend_bos }),
  };
  const hookName = o.hookName ?? dump?.hook_name;
  const hookNameOut = o.hookNameOut ?? dump?.hook_name_out;
  const modelName = o.modelName ?? dump?.model;
  await saveSaeLens(
    o.output,
    trainer.weights({ metadata, ...(hookName && { hookName }), ...(ctx.transcoder && hookNameOut && { hookNameOut }), ...(modelName && { modelName }) }),
    { sparsity: trainer.sparsity(), dtype: o.saveDtype ?? 'float32' },
  );
}
