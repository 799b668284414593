// The typed SAE API: validation in TypeScript with precise messages, heavy work in the addon
// off the main thread (every call returns a Promise), explicit lifetime with dispose().
import { addon, type AddonSae, type NativeFailure, type KernelDecision, type ScreenStats } from './addon.js';
import { type SparseCodes, validateCodes } from './codes.js';
import { NativeError, NonFiniteInputError, ValidationError, expected } from './errors.js';
import { existsSync } from 'node:fs';
import type { HubOptions } from './hub/hub.js';
import type { ReadOptions } from './formats/cltDecoder.js';
import { readSaeDir } from './formats/saeDir.js';
import { firstNonFinite } from './formats/saeTensors.js';
import { type Device, resolveDevice } from './system.js';
import { isTranscoder, type SaeConfig, type SaeWeights } from './types.js';

/** For loadSae(release, { id }): which SAE of the release, and how to fetch it. */
export interface PretrainedOptions extends HubOptions, ReadOptions {
  /** The SAE id within the release (SAELens' sae_id). */
  id?: string;
  /** A release registry JSON file (default $SAEKIT_RELEASES or ~/.config/saekit/releases.json). */
  registry?: string;
}

export interface LoadOptions {
  /** 'auto' (default) picks CUDA when a working device and kernels exist, else the CPU. */
  device?: Device;
}

/** Options of one encode or decode call. */
export interface CallOptions {
  /**
   * Stops the call early: the native work polls it between blocks of rows (milliseconds),
   * and the Promise rejects with signal.reason (an AbortError DOMException unless the caller
   * gave a reason), as fetch does. An already aborted signal rejects before any work.
   */
  signal?: AbortSignal;
}

/** The call's signal, checked; an already aborted one throws its reason here. */
function signalOf(o: CallOptions): AbortSignal | undefined {
  const s = o?.signal;
  if (s === undefined) return undefined;
  if (!(s instanceof AbortSignal)) throw expected('an AbortSignal', 'options.signal', s);
  s.throwIfAborted();
  return s;
}

/** An aborted call's signal.reason on its way through rethrow() unchanged. */
class Aborted {
  constructor(readonly reason: unknown) {}
}

/** Runs CALL with a cancel word the signal sets; an aborted call rejects with signal.reason. */
async function abortable<T>(signal: AbortSignal | undefined, call: (cancel: Int32Array | undefined) => Promise<T>): Promise<T> {
  if (signal === undefined) return call(undefined);
  if (signal.aborted) throw new Aborted(signal.reason);
  const word = new Int32Array(1);
  const onAbort = () => Atomics.store(word, 0, 1);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await call(word);
  } catch (e) {
    if ((e as NativeFailure)?.code === 'SAEKIT_ABORTED') throw new Aborted(signal.reason);
    throw e;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

export class Sae {
  #native: AddonSae | undefined;
  readonly #skip: boolean;

  /** Use loadSae() or createSae(). */
  constructor(
    native: AddonSae,
    readonly config: SaeConfig,
    readonly device: 'cpu' | 'cuda',
    skip = false,
  ) {
    this.#native = native;
    this.#skip = skip;
  }

  get dIn(): number {
    return this.config.dIn;
  }

  get dSae(): number {
    return this.config.dSae;
  }

  /** The width decode writes: d_in for SAEs, the predicted hook's width for transcoders. */
  get dOut(): number {
    return this.config.dOut ?? this.config.dIn;
  }

  /** A skip transcoder (its prediction adds x @ W_skip^T: use forward()). */
  get hasSkip(): boolean {
    return this.#skip;
  }

  /** Bytes of memory the backend holds for this SAE (0 after dispose). */
  get bytes(): number {
    return this.#native?.bytes() ?? 0;
  }

  /**
   * Encodes x ([rows, dIn] row-major float32) into sparse codes. Rows with a NaN or infinite
   * value are rejected (ValidationError naming the row and column): silently propagating NaN
   * through a top-k would produce codes that look valid. x must not be transferred or detached
   * while the Promise is pending.
   *
   * On the CPU the topk/jumprelu encode runs through an exact low-precision screen where the
   * CPU has one (SAEKIT_SCREEN: auto, bf16, int8, int8-256, or 0/off for the plain fp32
   * kernel): the codes equal the plain fp32 encode's bit for bit. APPROXIMATE mode, opt-in only:
   * with SAEKIT_SCREEN_APPROX=1 in the environment a topk encode returns the top k of the
   * SCREENED values (bf16 or int8 dot products) with those values, no fp32 rescoring: faster,
   * but latents within the screen's error bound of the k-th value may be swapped and every
   * value is off by up to that bound (README, "Why the screened encode is exact"). Never on
   * by default; jumprelu and standard SAEs ignore it.
   */
  async encode(x: Float32Array, options: CallOptions = {}): Promise<SparseCodes> {
    const native = this.#live();
    if (!(x instanceof Float32Array)) throw expected('Float32Array', 'x', x);
    const dIn = this.config.dIn;
    if (x.length % dIn !== 0)
      throw new ValidationError(`x has ${x.length} elements, not a multiple of d_in ${dIn} (expected [rows, ${dIn}])`);
    const rows = x.length / dIn;
    const signal = signalOf(options);
    if (rows === 0) return { rows: 0, dSae: this.dSae, indptr: new Uint32Array(1), indices: new Int32Array(0), values: new Float32Array(0) };
    try {
      const c = await abortable(signal, (cancel) => native.encode(x, rows, cancel));
      const codes: SparseCodes = { rows, dSae: this.dSae, indptr: c.indptr, indices: c.indices, values: c.values };
      if (c.rowScale) codes.rowScale = c.rowScale;
      if (c.rowShift) codes.rowShift = c.rowShift;
      return codes;
    } catch (e) {
      throw rethrow(e, 'x');
    }
  }

  /**
   * Decodes codes into [rows, dOut] float32 (x_hat, normalization undone; dOut = dIn for an
   * SAE), written into `out` when given (every element is overwritten) or into a new array.
   * For a skip transcoder this is the sparse part only (as SAELens's decode); forward() adds
   * the skip term.
   */
  async decode(codes: SparseCodes, out?: Float32Array, options: CallOptions = {}): Promise<Float32Array> {
    const native = this.#live();
    validateCodes(codes, this.dSae);
    const rows = codes.indptr.length - 1;
    const perRow = this.config.normalizeActivations === 'constant_norm_rescale' || this.config.normalizeActivations === 'layer_norm';
    if (perRow && rows > 0 && (!codes.rowScale || !codes.rowShift))
      throw new ValidationError(
        `codes lack rowScale/rowShift, which this SAE's normalization '${this.config.normalizeActivations}' needs to decode`,
      );
    const width = this.dOut;
    const named = width === this.dIn ? 'd_in' : 'd_out';
    if (out === undefined) out = new Float32Array(rows * width);
    else if (!(out instanceof Float32Array)) throw expected('Float32Array', 'out', out);
    else if (out.length !== rows * width)
      throw new ValidationError(`out has ${out.length} elements, expected rows * ${named} = ${rows} * ${width}`);
    const signal = signalOf(options);
    if (rows === 0) return out;
    try {
      return await abortable(signal, (cancel) => native.decode(codes, out, cancel));
    } catch (e) {
      throw rethrow(e, 'codes');
    }
  }

  /**
   * The SAE's output for x ([rows, dIn]): decode(encode(x)), plus x @ W_skip^T for a skip
   * transcoder (SAELens's forward). [rows, dOut] float32, into `out` when given.
   */
  async forward(x: Float32Array, out?: Float32Array, options: CallOptions = {}): Promise<Float32Array> {
    const codes = await this.encode(x, options);
    const y = await this.decode(codes, out, options);
    if (!this.#skip || codes.rows === 0) return y;
    const native = this.#live();
    const signal = signalOf(options); // outside the try: an abort by now rejects with its own reason
    try {
      return await abortable(signal, (cancel) => native.addSkip(x, codes.rows, y, cancel));
    } catch (e) {
      throw rethrow(e, 'x');
    }
  }

  /**
   * Rows re-encoded so far because the CPU top-k's threshold hint (learned from earlier rows)
   * was above a row's k-th value. Results are exact regardless; a high count means the rows'
   * statistics vary a lot and the hint buys little.
   */
  get hintMisses(): number {
    return this.#native?.hintMisses() ?? 0;
  }

  /**
   * The exact screen's counters since load (CPU, topk/jumprelu, bf16 or int8 screen): rows
   * screened, candidates rescored in fp32, rows that fell back to the plain fp32 encode, and
   * the screen the latest screened block used. All zero where screening does not run (CPUs
   * without a screen, standard SAEs, SAEKIT_SCREEN=0).
   */
  get screenStats(): ScreenStats {
    return this.#native?.screenStats() ?? { rows: 0, candidates: 0, fallbacks: 0, screen: 'off' };
  }

  /**
   * How this SAE's encode kernel was chosen, per batch size class encoded so far: the kernels
   * timed on its weights at the first encode of the class (or a stored decision), the winner
   * and why. Empty before the first encode, where a kernel is forced (SAEKIT_ENCODE_KERNEL), on
   * CPUs with no screen, and on the CUDA backend.
   */
  get kernelChoice(): KernelDecision[] {
    const text = this.#native?.kernelReport() ?? '[]';
    return JSON.parse(text) as KernelDecision[];
  }

  /** Frees the native memory now. Calls already running finish first; later calls throw. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  #live(): AddonSae {
    if (!this.#native) throw new ValidationError('this Sae was disposed');
    return this.#native;
  }
}

// The native message, rethrown as a saekit error created here so the user's stack is kept.
function rethrow(e: unknown, inputName: string): unknown {
  const f = e as NativeFailure;
  if (e instanceof Aborted) return e.reason;
  if (f?.code === 'SAEKIT_INPUT' && f.row !== undefined)
    return new NonFiniteInputError(inputName, f.row, f.col ?? 0);
  return new NativeError(f?.message ?? String(e));
}

/** Validates weights against their config: every shape, k, and float32 storage. */
export function validateWeights(w: SaeWeights): void {
  const c = w.config;
  for (const key of ['dIn', 'dSae'] as const) {
    if (!Number.isInteger(c[key]) || c[key] < 1) throw expected('a positive integer', `config.${key}`, c[key]);
  }
  if (!['standard', 'topk', 'jumprelu'].includes(c.architecture))
    throw new ValidationError(`unsupported architecture '${c.architecture}' (saekit runs standard, topk, jumprelu)`);
  if (c.architecture === 'topk' && (!Number.isInteger(c.k) || c.k! < 1 || c.k! > c.dSae))
    throw new ValidationError(`k must be an integer in [1, d_sae = ${c.dSae}] for a topk SAE but got ${c.k}`);
  if (!['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'].includes(c.normalizeActivations))
    throw new ValidationError(`unsupported normalize_activations '${c.normalizeActivations}'`);
  const dOut = c.dOut ?? c.dIn;
  if (c.dOut !== undefined && (!Number.isInteger(c.dOut) || c.dOut < 1)) throw expected('a positive integer', 'config.dOut', c.dOut);
  const transcoder = isTranscoder(c, w.W_skip !== undefined);
  if (transcoder && c.applyBDecToInput && dOut !== c.dIn)
    throw new ValidationError(`config.applyBDecToInput is true for a transcoder (d_out ${dOut} != d_in ${c.dIn}): b_dec is an output bias`);
  if (transcoder && (c.normalizeActivations === 'constant_norm_rescale' || c.normalizeActivations === 'layer_norm'))
    throw new ValidationError(`normalize_activations '${c.normalizeActivations}' is not supported for transcoders`);
  const shapes: Array<[keyof SaeWeights, number]> = [
    ['W_enc', c.dIn * c.dSae],
    ['b_enc', c.dSae],
    ['W_dec', c.dSae * dOut],
    ['b_dec', dOut],
  ];
  if (w.W_skip !== undefined) shapes.push(['W_skip', dOut * c.dIn]);
  if (typeof c.applyBDecToInput !== 'boolean') throw expected('a boolean', 'config.applyBDecToInput', c.applyBDecToInput);
  if (typeof w.encTransposed !== 'boolean') throw expected('a boolean', 'encTransposed', w.encTransposed);
  if (c.architecture === 'jumprelu') shapes.push(['threshold', c.dSae]);
  for (const [key, n] of shapes) {
    const a = w[key];
    if (!(a instanceof Float32Array)) throw expected('Float32Array', key, a);
    if (a.length !== n)
      throw new ValidationError(`${key} has ${a.length} elements, expected ${n} for d_in ${c.dIn}, d_sae ${c.dSae}${dOut !== c.dIn ? `, d_out ${dOut}` : ''}`);
    // A NaN weight silently removes its latent from every top-k; an infinite one wins them all.
    const bad = firstNonFinite(a);
    if (bad >= 0) throw new ValidationError(`${key}[${bad}] is ${a[bad]}: weights must be finite`);
  }
}


/** Loads SAE weights already in memory onto a backend. */
export async function createSae(weights: SaeWeights, options: LoadOptions = {}): Promise<Sae> {
  validateWeights(weights);
  const device = resolveDevice(options.device);
  const c = weights.config;
  // 'auto' on a GPU machine: an SAE the CUDA kernels do not cover (top-k with k > 256) runs
  // on the CPU instead of failing.
  // Skip transcoders (a dense W_skip term: no CUDA kernel yet) run on the CPU backend only.
  const cpuOnly = (c.architecture === 'topk' && (c.k ?? 0) > 256) || weights.W_skip !== undefined;
  if (device === 'cuda' && (options.device ?? 'auto') === 'auto' && cpuOnly) {
    return createSae(weights, { ...options, device: 'cpu' });
  }
  try {
    const native = await addon().createSae(
      {
        dIn: c.dIn,
        dSae: c.dSae,
        k: c.k ?? 0,
        architecture: c.architecture,
        normalizeActivations: c.normalizeActivations,
        applyBDecToInput: c.applyBDecToInput,
        dOut: c.dOut ?? c.dIn,
        skip: weights.W_skip !== undefined,
      },
      {
        W_enc: weights.W_enc,
        encTransposed: weights.encTransposed,
        b_enc: weights.b_enc,
        W_dec: weights.W_dec,
        b_dec: weights.b_dec,
        ...(weights.threshold ? { threshold: weights.threshold } : {}),
        ...(weights.W_skip ? { W_skip: weights.W_skip } : {}),
      },
      device,
    );
    return new Sae(native, c, device, weights.W_skip !== undefined);
  } catch (e) {
    throw rethrow(e, 'weights');
  }
}

/**
 * Loads an SAE onto a backend: a directory (SAELens, sparsify or Gemma Scope), or a pretrained
 * release by SAELens name with `id` (e.g. loadSae('gpt2-small-res-jb', { id:
 * 'blocks.8.hook_resid_pre' })), pulled once into the Hugging Face hub cache.
 */
export async function loadSae(dir: string, options: LoadOptions & PretrainedOptions = {}): Promise<Sae> {
  if (typeof dir !== 'string' || dir.length === 0) throw expected('a directory path', 'dir', dir);
  const device = resolveDevice(options.device);  // fail fast, before reading gigabytes
  if (options.id !== undefined || (!existsSync(dir) && (await import('./hub/registry.js')).isRelease(dir, options.registry))) {
    const { loadPretrainedSae } = await import('./hub/pretrained.js');
    return (await loadPretrainedSae(dir, options.id, { ...options, device })).sae;
  }
  const weights = await readSaeDir(dir, options.cltTarget !== undefined ? { cltTarget: options.cltTarget } : {});
  if (options.cltTarget !== undefined && weights.config.metadata['clt_target'] === undefined) {
    throw new ValidationError(`cltTarget ${JSON.stringify(options.cltTarget)} is for cross-layer transcoders, and ${dir} is not one`);
  }
  return createSae(weights, { device });
}
