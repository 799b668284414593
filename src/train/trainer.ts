// SaeTrainer: one TopK SAE being trained, its parameters, Adam moments and firing statistics
// held by the native backend (native/cpu/cpu_trainer.cpp documents the math). This class is
// the typed, validated step-by-step API; train.ts runs whole training jobs on top of it.
import { addon, type AddonTrainer, type NativeFailure, type NativeStepStats, type TrainerStateName } from '../addon.js';
import { NativeError, NonFiniteInputError, ValidationError, expected } from '../errors.js';
import type { SaeConfig, SaeWeights } from '../types.js';

export type TrainArchitecture = 'topk' | 'batchtopk' | 'standard' | 'jumprelu';

export interface TrainerConfig {
  /**
   * topk: k latents per row. batchtopk: k * rows over the whole batch, saved as jumprelu with
   * the threshold learned in training. standard: relu with an L1 penalty (l1Coeff) scaled by
   * decoder-row norms. jumprelu: per-latent thresholds learned by straight-through estimators
   * (bandwidth) with an L0 penalty (l0Coeff).
   */
  architecture: TrainArchitecture;
  dIn: number;
  dSae: number;
  /** Active latents per row (topk; batchtopk's average). Ignored by standard and jumprelu. */
  k: number;
  /** AuxK latents per row (Gao et al.: d_in / 2); 0 disables AuxK. */
  kAux: number;
  /** AuxK loss coefficient (1/32 in Gao et al.). */
  auxCoeff: number;
  /** A latent is dead after this many tokens without firing (feeds AuxK and the dead fraction). */
  deadTokens: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global gradient-norm clip; 0 disables. */
  clip: number;
  /** Inputs are multiplied by this (expected_average_only_in); folded into the saved weights. */
  inputScale: number;
  /** standard: L1 coefficient lambda of lambda * mean_n sum_j f_nj ||W_dec[j]||. */
  l1Coeff: number;
  /** jumprelu: L0 coefficient lambda of lambda * mean_n |active_n|. */
  l0Coeff: number;
  /** jumprelu: width of the straight-through estimators' rectangle kernel. */
  bandwidth: number;
  /**
   * Transcoders: the width of the predicted output (its own hook, e.g. the MLP's output).
   * Absent: an SAE (dOut = dIn, the target is the input).
   */
  dOut?: number;
  /** A transcoder: reads the input rows, predicts a second tensor of target rows (dOut wide). */
  transcoder?: boolean;
  /** A skip transcoder: a dense W_skip [dOut, dIn] is trained beside the dictionary. */
  skip?: boolean;
  /** Transcoders: the target rows are multiplied by this (folded into the saved weights). */
  outputScale?: number;
  /**
   * batchtopk: Matryoshka prefix widths (strictly increasing, the first >= k, the last dSae):
   * every prefix of the dictionary reconstructs from its own batch top-k and the losses add.
   */
  matryoshkaWidths?: number[];
}

export const defaultTrainerConfig = (dIn: number, dSae: number, k: number, architecture: TrainArchitecture = 'topk'): TrainerConfig => ({
  architecture,
  dIn,
  dSae,
  k,
  kAux: Math.min(dSae, Math.max(1, Math.floor(dIn / 2))),
  auxCoeff: 1 / 32,
  deadTokens: 10_000_000,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  clip: 0,
  inputScale: 1,
  l1Coeff: 5,
  // jumprelu starting points for inputs scaled to mean norm sqrt(d_in) (pre-activations of
  // order 1): a kernel 0.05 wide sees enough entries to move the thresholds; tune l0Coeff for
  // the L0 you want.
  l0Coeff: 0.5,
  bandwidth: 0.05,
});

/** Parameters in SAELens layouts (W_enc [d_in, d_sae], W_dec [d_sae, d_in]), training units. */
export interface TrainParams {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** jumprelu only: log of the thresholds, [d_sae]. */
  log_threshold?: Float32Array;
  /** skip transcoders only: [d_out, d_in] (SAELens layout). */
  W_skip?: Float32Array;
}

export interface StepMetrics {
  /** Mean over rows of ||x_hat - x||^2 (inputs scaled by inputScale). */
  mse: number;
  /** Fraction of variance unexplained, about the batch mean. */
  fvu: number;
  explainedVariance: number;
  l0: number;
  auxLoss: number;
  /** standard: the L1 penalty term; jumprelu: the L0 penalty term (0 otherwise). */
  sparsityLoss: number;
  /** Gradient norm before clipping (0 for gradients()). */
  gradNorm: number;
  deadFraction: number;
  /** matryoshka: the inner prefixes' MSE, summed (0 otherwise). */
  innerMse: number;
}

/** Everything a checkpoint needs to continue bit-exactly. */
export interface TrainerState {
  step: number;
  tokens: number;
  tensors: Record<TrainerStateName, Float32Array | Float64Array>;
}

export const PARAM_NAMES = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];
type Trained = ParamName | 'log_threshold' | 'W_skip';

/** The tensors a trainer of this config trains: W_skip only for skip transcoders. */
function trainedOf(c: TrainerConfig): Trained[] {
  return [...PARAM_NAMES, 'log_threshold', ...(c.skip ? (['W_skip'] as const) : [])];
}

function stateNamesOf(c: TrainerConfig): TrainerStateName[] {
  const trained = trainedOf(c);
  return [
    ...trained,
    ...trained.map((p) => `adam_m.${p}` as const),
    ...trained.map((p) => `adam_v.${p}` as const),
    'fires',
    'since_fired',
    'batch_threshold',
  ];
}
const F64_STATE = new Set<TrainerStateName>(['fires', 'since_fired', 'batch_threshold']);

function checkInt(v: unknown, name: string, lo: number, hi: number): void {
  if (!Number.isSafeInteger(v) || (v as number) < lo || (v as number) > hi) throw expected(`an integer in [${lo}, ${hi}]`, name, v);
}

function checkNumber(v: unknown, name: string, lo: number, hi: number, what = `a number in [${lo}, ${hi}]`): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) throw expected(what, name, v);
}

export function validateTrainerConfig(c: TrainerConfig): void {
  if (!['topk', 'batchtopk', 'standard', 'jumprelu'].includes(c.architecture))
    throw expected("'topk', 'batchtopk', 'standard' or 'jumprelu'", 'architecture', c.architecture);
  checkInt(c.dIn, 'dIn', 1, 1 << 20);
  checkInt(c.dSae, 'dSae', 1, 1 << 26);
  if (c.dOut !== undefined) checkInt(c.dOut, 'dOut', 1, 1 << 20);
  if (c.dOut !== undefined && c.dOut !== c.dIn && !c.transcoder) throw new ValidationError(`dOut (${c.dOut}) differs from dIn (${c.dIn}): set transcoder`);
  if (c.skip && !c.transcoder) throw new ValidationError('skip needs transcoder: a skip term maps the input to a different output');
  if (c.outputScale !== undefined && (!(c.outputScale > 0) || !Number.isFinite(c.outputScale))) throw expected('a positive finite number', 'outputScale', c.outputScale);
  if (c.matryoshkaWidths !== undefined) {
    const w = c.matryoshkaWidths;
    if (c.architecture !== 'batchtopk') throw new ValidationError(`matryoshkaWidths need architecture 'batchtopk' (got '${c.architecture}')`);
    if (!Array.isArray(w) || w.length === 0) throw expected('a non-empty array of widths', 'matryoshkaWidths', w);
    w.forEach((v, i) => checkInt(v, `matryoshkaWidths[${i}]`, i === 0 ? Math.max(1, c.k) : w[i - 1]! + 1, c.dSae));
    if (w[w.length - 1] !== c.dSae) throw new ValidationError(`the last matryoshka width (${w[w.length - 1]}) must be dSae (${c.dSae})`);
  }
  if (c.architecture === 'topk' || c.architecture === 'batchtopk') checkInt(c.k, 'k', 1, c.dSae);
  checkNumber(c.l1Coeff, 'l1Coeff', 0, 1e9);
  checkNumber(c.l0Coeff, 'l0Coeff', 0, 1e9);
  if (!(c.bandwidth > 0) || !Number.isFinite(c.bandwidth)) throw expected('a positive finite number', 'bandwidth', c.bandwidth);
  checkInt(c.kAux, 'kAux', 0, c.dSae);
  checkNumber(c.auxCoeff, 'auxCoeff', 0, 1e6);
  checkNumber(c.deadTokens, 'deadTokens', 0, Number.MAX_SAFE_INTEGER);
  checkNumber(c.beta1, 'beta1', 0, 0.999999, 'a number in [0, 1)');
  checkNumber(c.beta2, 'beta2', 0, 0.999999999, 'a number in [0, 1)');
  checkNumber(c.eps, 'eps', 0, 1);
  checkNumber(c.clip, 'clip', 0, Number.MAX_VALUE);
  if (!(c.inputScale > 0) || !Number.isFinite(c.inputScale)) throw expected('a positive finite number', 'inputScale', c.inputScale);
}

function checkParams(p: TrainParams, c: TrainerConfig): void {
  const { dIn, dSae } = c;
  const dOut = c.dOut ?? dIn;
  const lengths: Record<Trained, number> = { W_enc: dIn * dSae, b_enc: dSae, W_dec: dSae * dOut, b_dec: dOut, log_threshold: dSae, W_skip: dOut * dIn };
  const names: Trained[] = [...PARAM_NAMES, ...(c.architecture === 'jumprelu' ? (['log_threshold'] as const) : [])];
  if (c.skip && p.W_skip !== undefined) names.push('W_skip');
  for (const name of names) {
    const a = p[name];
    if (!(a instanceof Float32Array) || a.length !== lengths[name]) throw expected(`Float32Array(${lengths[name]})`, name, a);
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i]!)) throw new ValidationError(`initial ${name} has a non-finite value at element ${i}`);
    }
  }
}

export class SaeTrainer {
  #native: AddonTrainer | undefined;
  #step = 0;
  #tokens = 0;

  private constructor(
    native: AddonTrainer,
    readonly config: TrainerConfig,
    readonly device: 'cpu' | 'cuda',
  ) {
    this.#native = native;
  }

  /** Creates a trainer from initial parameters (see initParams in init.ts). */
  static async create(config: TrainerConfig, params: TrainParams, device: 'cpu' | 'cuda' = 'cpu'): Promise<SaeTrainer> {
    validateTrainerConfig(config);
    checkParams(params, config);
    try {
      const native = await addon().createTrainer(
        {
          dIn: config.dIn,
          dSae: config.dSae,
          k: config.architecture === 'topk' || config.architecture === 'batchtopk' ? config.k : 0,
          kAux: config.auxCoeff > 0 && (config.architecture === 'topk' || config.architecture === 'batchtopk') ? config.kAux : 0,
          architecture: config.architecture,
          ...(config.dOut !== undefined && { dOut: config.dOut }),
          transcoder: config.transcoder === true,
          skip: config.skip === true,
          ...(config.matryoshkaWidths !== undefined && { matryoshkaWidths: [...config.matryoshkaWidths] }),
        },
        params,
        device,
      );
      return new SaeTrainer(native, { ...config }, device);
    } catch (e) {
      throw new NativeError(`could not create the trainer on ${device}: ${(e as Error).message}`);
    }
  }

  /** Optimizer steps taken. */
  get step(): number {
    return this.#step;
  }

  /** Tokens (rows) trained on. */
  get tokens(): number {
    return this.#tokens;
  }

  /**
   * One optimizer step on a batch ([rows, dIn] float32, raw units) at learning rate lr; a
   * transcoder also takes its target rows ([rows, dOut], the output hook's activations).
   */
  async trainStep(batch: Float32Array, lr: number, target?: Float32Array): Promise<StepMetrics> {
    checkNumber(lr, 'lr', 0, 1e6);
    const stats = await this.#run(batch, target, lr, true);
    this.#step += 1;
    this.#tokens += batch.length / this.config.dIn;
    return stats;
  }

  /**
   * Loss and raw gradients (SAELens layouts, training units) of a batch, nothing updated:
   * for gradient checks and custom optimizers.
   */
  async gradients(batch: Float32Array, target?: Float32Array): Promise<{ metrics: StepMetrics; grads: TrainParams }> {
    const metrics = await this.#run(batch, target, 0, false);
    const native = this.#live();
    const g = (p: Trained) => native.getState(`grad.${p}`) as Float32Array;
    const grads: TrainParams = { W_enc: g('W_enc'), b_enc: g('b_enc'), W_dec: g('W_dec'), b_dec: g('b_dec') };
    if (this.config.architecture === 'jumprelu') grads.log_threshold = g('log_threshold');
    if (this.config.skip) grads.W_skip = g('W_skip');
    return { metrics, grads };
  }

  /** The last step's selections (CSR over rows): main top-k, or AuxK's. */
  lastSelection(aux = false): { indptr: Uint32Array; indices: Int32Array } {
    return this.#live().lastSelection(aux);
  }

  /** Current parameters (copies), training units. */
  params(): TrainParams {
    const native = this.#live();
    const g = (p: Trained) => native.getState(p) as Float32Array;
    const p: TrainParams = { W_enc: g('W_enc'), b_enc: g('b_enc'), W_dec: g('W_dec'), b_dec: g('b_dec') };
    if (this.config.architecture === 'jumprelu') p.log_threshold = g('log_threshold');
    if (this.config.skip) p.W_skip = g('W_skip');
    return p;
  }

  /** Per-latent firing counts over all steps (Float64Array [dSae]). */
  fires(): Float64Array {
    return this.#live().getState('fires') as Float64Array;
  }

  /** log10(firing frequency + 1e-10) per latent: SAELens' sparsity.safetensors. */
  sparsity(): Float32Array {
    const fires = this.fires();
    const out = new Float32Array(fires.length);
    const tokens = Math.max(1, this.#tokens);
    for (let j = 0; j < fires.length; j++) out[j] = Math.log10(fires[j]! / tokens + 1e-10);
    return out;
  }

  /** Copies every tensor a checkpoint needs. */
  state(): TrainerState {
    const native = this.#live();
    const tensors = {} as TrainerState['tensors'];
    for (const name of stateNamesOf(this.config)) tensors[name] = native.getState(name);
    return { step: this.#step, tokens: this.#tokens, tensors };
  }

  /** Restores a state() (from this or an identically configured trainer). */
  loadState(state: TrainerState): void {
    const native = this.#live();
    checkInt(state.step, 'state.step', 0, Number.MAX_SAFE_INTEGER);
    checkInt(state.tokens, 'state.tokens', 0, Number.MAX_SAFE_INTEGER);
    for (const name of stateNamesOf(this.config)) {
      const a = state.tensors[name];
      const want = F64_STATE.has(name) ? Float64Array : Float32Array;
      if (!(a instanceof want)) throw expected(want.name, `state tensor ${name}`, a);
      try {
        native.setState(name, a);
      } catch (e) {
        throw new ValidationError(`state tensor ${name}: ${(e as Error).message}`);
      }
    }
    this.#step = state.step;
    this.#tokens = state.tokens;
  }

  /** batchtopk: the inference threshold learned so far (0 before the first step). */
  batchThreshold(): number {
    return (this.#live().getState('batch_threshold') as Float64Array)[0]!;
  }

  /**
   * The trained SAE in raw input units: the input scale s folded in (W_enc * s, W_dec / s,
   * b_dec / s), ready for saveSaeLens or createSae. topk stays topk; batchtopk (matryoshka
   * too) becomes jumprelu with its learned threshold (pre-activations are unchanged by the
   * folding); standard stays standard; jumprelu stays jumprelu with threshold =
   * exp(log_threshold). A transcoder's output scale s_out folds into its decoder instead
   * (W_dec / s_out, b_dec / s_out, W_skip * s / s_out), and it never centers its input.
   */
  weights(extra: Partial<Pick<SaeConfig, 'hookName' | 'hookNameOut' | 'modelName' | 'metadata'>> = {}): SaeWeights {
    const p = this.params();
    const c = this.config;
    const s = c.inputScale;
    const sOut = c.transcoder ? (c.outputScale ?? 1) : s;
    if (s !== 1) for (let i = 0; i < p.W_enc.length; i++) p.W_enc[i]! *= s;
    if (sOut !== 1) {
      for (let i = 0; i < p.W_dec.length; i++) p.W_dec[i]! /= sOut;
      for (let i = 0; i < p.b_dec.length; i++) p.b_dec[i]! /= sOut;
    }
    if (p.W_skip && s !== sOut) for (let i = 0; i < p.W_skip.length; i++) p.W_skip[i]! *= s / sOut;
    const arch = c.architecture;
    const config: SaeConfig = {
      architecture: arch === 'batchtopk' ? 'jumprelu' : arch,
      dIn: c.dIn,
      dSae: c.dSae,
      ...(arch === 'topk' && { k: c.k }),
      ...(c.transcoder && { dOut: c.dOut ?? c.dIn }),
      applyBDecToInput: !c.transcoder,
      normalizeActivations: 'none',
      dtype: 'float32',
      format: 'saelens',
      metadata: extra.metadata ?? {},
      ...(extra.hookName !== undefined && { hookName: extra.hookName }),
      ...(c.transcoder && extra.hookNameOut !== undefined && { hookNameOut: extra.hookNameOut }),
      ...(extra.modelName !== undefined && { modelName: extra.modelName }),
    };
    const w: SaeWeights = { config, W_enc: p.W_enc, encTransposed: false, b_enc: p.b_enc, W_dec: p.W_dec, b_dec: p.b_dec };
    if (arch === 'batchtopk') w.threshold = new Float32Array(c.dSae).fill(this.batchThreshold());
    if (arch === 'jumprelu') w.threshold = p.log_threshold!.map(Math.exp);
    if (p.W_skip) w.W_skip = p.W_skip;
    return w;
  }

  /** Bytes of memory the backend holds (parameters, Adam moments, gradients, packed encoder). */
  get bytes(): number {
    return this.#native?.bytes() ?? 0;
  }

  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  #live(): AddonTrainer {
    if (!this.#native) throw new ValidationError('this trainer was disposed');
    return this.#native;
  }

  async #run(batch: Float32Array, target: Float32Array | undefined, lr: number, apply: boolean): Promise<StepMetrics> {
    const native = this.#live();
    const c = this.config;
    if (!(batch instanceof Float32Array)) throw expected('Float32Array', 'batch', batch);
    if (batch.length === 0 || batch.length % c.dIn !== 0)
      throw new ValidationError(`batch has ${batch.length} elements; expected [rows, ${c.dIn}] with rows >= 1`);
    const rows = batch.length / c.dIn;
    const dOut = c.dOut ?? c.dIn;
    if (c.transcoder) {
      if (!(target instanceof Float32Array)) throw expected(`Float32Array target rows [${rows}, ${dOut}] (a transcoder predicts them)`, 'target', target);
      if (target.length !== rows * dOut) throw new ValidationError(`target has ${target.length} elements; expected [${rows}, ${dOut}] (one row per batch row)`);
    } else if (target !== undefined) {
      throw new ValidationError('target rows were given to an SAE trainer (its target is its input; set transcoder to predict another tensor)');
    }
    let s: NativeStepStats;
    try {
      s = await native.step(batch, c.transcoder ? target! : null, rows, {
        inputScale: c.inputScale,
        outputScale: c.outputScale ?? 1,
        lr,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        clip: c.clip,
        t: this.#step + 1,
        auxCoeff: c.auxCoeff,
        deadTokens: c.deadTokens,
        l1Coeff: c.architecture === 'standard' ? c.l1Coeff : 0,
        l0Coeff: c.architecture === 'jumprelu' ? c.l0Coeff : 0,
        bandwidth: c.bandwidth,
        apply,
      });
    } catch (e) {
      const f = e as NativeFailure;
      if (f.code === 'SAEKIT_INPUT' && f.row !== undefined)
        throw new NonFiniteInputError(f.message.includes('target') ? 'training target' : 'training batch', f.row, f.col ?? 0);
      throw new NativeError(`training step failed: ${f.message}`);
    }
    return {
      mse: s.mse,
      fvu: s.fvu,
      explainedVariance: 1 - s.fvu,
      l0: s.l0,
      auxLoss: s.auxLoss,
      sparsityLoss: s.sparsityLoss,
      gradNorm: s.gradNorm,
      deadFraction: s.dead / c.dSae,
      innerMse: s.innerMse,
    };
  }
}
