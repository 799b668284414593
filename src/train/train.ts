// train(): a whole TopK SAE training job. Data streams from activation files (or any
// RowSource) through a window-shuffled BatchStream; every step runs natively; metrics go to
// <output>/metrics.jsonl, checkpoints to <output>/checkpoint/, and the final SAE is saved as a
// SAELens directory at <output> (cfg.json, sae_weights.safetensors, sparsity.safetensors).
//
// Exact resume: the batch stream is a pure function of (seed, rows consumed), parameters and
// optimizer state come back bit for bit, and the native step does not depend on the thread
// count, so a resumed run continues exactly as the uninterrupted one would have.
import { readActivationsManifest } from '../model/activations.js';
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { NonFiniteInputError, ValidationError, expected } from '../errors.js';
import { saveSaeLens, type SaveDtype } from '../formats/saveSaeLens.js';
import { resolveDevice, type Device } from '../system.js';
import { CHECKPOINT_DIR, checkResumable, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { BatchStream, openRowSource, type RowSource } from './data.js';
import { expectedAverageScale, initParams, type BDecInit } from './init.js';
import { learningRate, validateSchedule, type DecayKind, type LrSchedule } from './schedule.js';
import { SaeTrainer, defaultTrainerConfig, type StepMetrics, type TrainArchitecture, type TrainerConfig } from './trainer.js';

export interface TrainJobOptions {
  /** topk (default), batchtopk (saved as jumprelu), standard (relu + L1) or jumprelu (STE + L0). */
  architecture?: TrainArchitecture;
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
  /** Called when a checkpoint has been saved (at STEP). */
  onCheckpoint?: (p: { step: number; totalSteps: number }) => void;
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

export async function train(o: TrainJobOptions): Promise<TrainResult> {
  if (typeof o.output !== 'string' || o.output === '') throw expected('a directory path', 'output', o.output);
  if (o.stopAfterSteps !== undefined) positiveInt(o.stopAfterSteps, 'stopAfterSteps');
  const outputKind = await stat(o.output).then((st) => (st.isDirectory() ? 'dir' : 'file'), () => 'absent');
  if (outputKind === 'file') throw new ValidationError(`output ${o.output} is a file; training writes a directory there`);
  const architecture = o.architecture ?? 'topk';
  if (!['topk', 'batchtopk', 'standard', 'jumprelu'].includes(architecture))
    throw expected("'topk', 'batchtopk', 'standard' or 'jumprelu'", 'architecture', architecture);
  const perRowK = architecture === 'topk' || architecture === 'batchtopk';
  const k = !perRowK && o.k === undefined ? 0 : positiveInt(o.k, 'k');
  const tokens = positiveInt(o.tokens, 'tokens');
  const batchSize = positiveInt(o.batchSize ?? 4096, 'batchSize');
  const seed = o.seed ?? 42;
  if (!Number.isSafeInteger(seed)) throw expected('an integer', 'seed', seed);
  // Training kernels exist for the CPU only: 'auto' trains there even where encode would use CUDA.
  const device = o.device === undefined || o.device === 'auto' ? 'cpu' : resolveDevice(o.device);
  if (device !== 'cpu') throw new ValidationError(`training runs on the CPU backend only in this version (device '${device}' requested)`);

  const source = typeof o.input === 'string' ? await openRowSource(o.input, o.tensor !== undefined ? { tensor: o.tensor } : {}) : o.input;
  const inputName = typeof o.input === 'string' ? resolve(o.input) : 'a live source';
  // A dump from `saekit activations` says which model and hook it came from, and how it was
  // tokenized: the SAE's cfg.json carries that on, so `saekit features`/`eval` need no flags.
  const dump = typeof o.input === 'string' ? await readActivationsManifest(o.input).catch(() => undefined) : undefined;
  let trainer: SaeTrainer | undefined;
  try {
    const dIn = source.dIn;
    if (o.dSae !== undefined && o.expansion !== undefined) throw new ValidationError('give dSae or expansion, not both');
    const dSae = o.dSae !== undefined ? positiveInt(o.dSae, 'dSae') : positiveInt(o.expansion ?? 32, 'expansion') * dIn;
    if (k > dSae) throw new ValidationError(`k (${k}) must be <= d_sae (${dSae})`);
    const totalSteps = Math.ceil(tokens / batchSize);
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
    };
    const initThreshold = o.initThreshold ?? 0.1;
    if (!(initThreshold > 0) || !Number.isFinite(initThreshold)) throw expected('a positive number', 'initThreshold', initThreshold);
    const defaultWindow = Math.max(batchSize, Math.floor((64 << 20) / (4 * dIn)));
    const shuffleWindow = o.shuffleWindow ?? defaultWindow;
    const logEvery = positiveInt(o.logEvery ?? 100, 'logEvery');
    const checkpointEvery = o.checkpointEvery ?? 1000;
    if (!Number.isSafeInteger(checkpointEvery) || checkpointEvery < 0) throw expected('an integer >= 0', 'checkpointEvery', checkpointEvery);
    const initRows = positiveInt(o.initRows ?? 4096, 'initRows');
    // What shapes the run: a resume must match it exactly.
    const job = { batchSize, seed, shuffleWindow, normalize, bDecInit, initRows, input: inputName, schedule, ...(architecture === 'jumprelu' && { initThreshold }) };

    await mkdir(o.output, { recursive: true });
    const metricsFile = join(o.output, METRICS_FILE);
    const checkpoint = o.resume ? await loadCheckpoint(o.output) : undefined;
    if (checkpoint) {
      checkResumable(checkpoint.meta, config, job, join(o.output, CHECKPOINT_DIR));
      config.inputScale = checkpoint.meta.trainer.inputScale;
      // Params are replaced by the checkpoint's at once; zeros avoid a wasted initialization.
      const zeros = {
        W_enc: new Float32Array(dIn * dSae),
        b_enc: new Float32Array(dSae),
        W_dec: new Float32Array(dSae * dIn),
        b_dec: new Float32Array(dIn),
        log_threshold: new Float32Array(dSae),
      };
      trainer = await SaeTrainer.create(config, zeros, device);
      trainer.loadState(checkpoint.state);
      await truncateMetrics(metricsFile, checkpoint.meta.step);
    } else {
      const sample = await readFirstRows(source, initRows);
      if (sample.length === 0) throw new ValidationError(`no activation rows in ${inputName}`);
      const bad = firstNonFinite(sample, dIn);
      if (bad) throw new NonFiniteInputError(`${inputName} (first sample, used for initialization)`, bad.row, bad.col);
      config.inputScale = normalize === 'expected_average_only_in' ? expectedAverageScale(sample, dIn) : 1;
      for (let i = 0; i < sample.length; i++) sample[i]! *= config.inputScale;
      const decoderNorm = architecture === 'standard' ? 0.1 : 1;
      const init = initParams({ dIn, dSae, seed, bDecInit, sample, decoderNorm, ...(architecture === 'jumprelu' && { initThreshold }) });
      trainer = await SaeTrainer.create(config, init, device);
      await writeFile(metricsFile, '');
    }

    const stream = new BatchStream(source, { batchSize, shuffleWindow, seed, position: trainer.step * batchSize });
    const save = async () => {
      await saveCheckpoint(o.output, trainer!, { dataPosition: trainer!.step * batchSize, job });
      o.onCheckpoint?.({ step: trainer!.step, totalSteps });
    };
    const started = performance.now();
    const startTokens = trainer.tokens;
    let last: StepMetrics | undefined;
    let stopped = false;
    let stepsThisCall = 0;
    let intervalStart = performance.now();
    let intervalTokens = trainer.tokens;
    // The next batch is read while the current step computes.
    let pending = trainer.step < totalSteps ? stream.next() : Promise.resolve(undefined);
    if (o.signal?.aborted && trainer.step < totalSteps) {
      await save();
      stopped = true;
    }
    while (!stopped && trainer.step < totalSteps) {
      const batch = await pending;
      if (batch === undefined) throw new ValidationError(`${inputName} ran out of rows at step ${trainer.step + 1}`);
      const step = trainer.step;
      const lr = learningRate(schedule, step);
      const next = step + 1 < totalSteps ? stream.next() : Promise.resolve(undefined);
      next.catch(() => undefined); // surfaced when awaited
      try {
        last = await trainer.trainStep(batch, lr);
      } catch (e) {
        if (e instanceof NonFiniteInputError)
          throw new NonFiniteInputError(
            `${inputName}: the batch of step ${step + 1} (rows ${step * batchSize}..${(step + 1) * batchSize - 1} of the shuffled stream)`,
            e.row,
            e.col,
          );
        throw e;
      }
      pending = next;
      stepsThisCall += 1;
      const now = performance.now();
      const rate = ((trainer.tokens - startTokens) * 1000) / Math.max(1e-9, now - started);
      o.onStep?.({ step: trainer.step, totalSteps, tokens: trainer.tokens, totalTokens: totalSteps * batchSize, tokensPerSecond: rate });
      if (trainer.step % logEvery === 0 || trainer.step === totalSteps) {
        const record: MetricsRecord = {
          step: trainer.step,
          tokens: trainer.tokens,
          lr,
          mse: last.mse,
          fvu: last.fvu,
          explained_variance: last.explainedVariance,
          l0: last.l0,
          dead_fraction: last.deadFraction,
          aux_loss: last.auxLoss,
          sparsity_loss: last.sparsityLoss,
          grad_norm: last.gradNorm,
          tokens_per_second: ((trainer.tokens - intervalTokens) * 1000) / Math.max(1e-9, now - intervalStart),
          elapsed_s: (now - started) / 1000,
        };
        intervalStart = now;
        intervalTokens = trainer.tokens;
        await appendFile(metricsFile, `${JSON.stringify(record)}\n`);
        o.onLog?.(record);
      }
      const interrupted = (o.stopAfterSteps !== undefined && stepsThisCall >= o.stopAfterSteps) || o.signal?.aborted === true;
      if (trainer.step === totalSteps || interrupted || (checkpointEvery > 0 && trainer.step % checkpointEvery === 0)) await save();
      if (interrupted && trainer.step < totalSteps) {
        stopped = true;
        break;
      }
    }
    await stream.close();
    const seconds = (performance.now() - started) / 1000;
    if (!stopped) {
      const metadata: Record<string, unknown> = {
        dataset_path: inputName,
        trained_with: 'saekit',
        training_tokens: trainer.tokens,
        input_scale_folded: config.inputScale,
        ...(dump && { context_size: dump.context_size, prepend_bos: dump.prepend_bos }),
      };
      const hookName = o.hookName ?? dump?.hook_name;
      const modelName = o.modelName ?? dump?.model;
      await saveSaeLens(o.output, trainer.weights({ metadata, ...(hookName && { hookName }), ...(modelName && { modelName }) }), {
        sparsity: trainer.sparsity(),
        dtype: o.saveDtype ?? 'float32',
      });
    }
    return {
      steps: trainer.step,
      tokens: trainer.tokens,
      stopped,
      last,
      tokensPerSecond: seconds > 0 ? (trainer.tokens - startTokens) / seconds : 0,
      seconds,
      trainer: trainer.config,
    };
  } finally {
    trainer?.dispose();
    if (typeof o.input === 'string') await source.close();
  }
}
