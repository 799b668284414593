// Synthetic activations built from a KNOWN sparse dictionary, for the training demo and the
// feature-recovery test.
//
// WHY: with real model activations nobody knows the "right" features, so a trainer can only be
// judged by its loss. Here every row is a sparse non-negative combination of known unit
// directions plus a little noise, so a correct TopK-SAE trainer must end up with decoder rows
// that point along those directions; featureRecovery() measures how many it found.
//
// Generation is chunk-invariant: sample(a) followed by sample(b) yields exactly the rows of
// sample(a + b). Each feature has its own random stream and jumps straight to the next row it
// is active in (geometric gaps), so the cost is O(rows * meanActive * dIn), never
// O(rows * nFeatures); the noise has its own row-major stream.
import type { SparseCodes } from '../codes.js';
import { ValidationError } from '../errors.js';
import { bytesOf } from '../formats/elements.js';
import { encodeNpyHeader } from '../formats/npy.js';
import { writeAt, writeFileAtomic } from '../formats/fileIo.js';
import { Rng } from '../synthetic.js';

export interface GroundTruthOptions {
  dIn: number;
  nFeatures: number;
  /** Expected number of active features per row, e.g. 4. */
  meanActive: number;
  /** Std of the iid Gaussian noise per dimension, relative to unit feature scale, e.g. 0.01. */
  noise: number;
  seed: number;
}

/** Feature f's activation frequency is proportional to 1 / sqrt(f + FREQUENCY_OFFSET): mildly skewed. */
const FREQUENCY_OFFSET = 10;

/** Active features get a magnitude uniform in [MAGNITUDE_MIN, MAGNITUDE_MIN + 1). */
const MAGNITUDE_MIN = 0.5;

/** One active feature in one row of a sampleWithCodes() call. */
interface ActiveEntry {
  row: number;
  feature: number;
  value: number;
}

/** Rows per block when adding features: a block of d_in <= a few hundred stays in L2 cache. */
const BLOCK_ROWS = 512;

/** Per-feature state: its own stream and the next (absolute) row it is active in. */
interface FeatureStream {
  rng: Rng;
  nextRow: number;
  /** log(1 - p_f), for geometric gaps. */
  logMiss: number;
}

/** Mixes (seed, stream index) into an independent 32-bit seed. */
function streamSeed(seed: number, stream: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) + Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

export class GroundTruth {
  readonly dIn: number;
  readonly nFeatures: number;
  readonly noise: number;
  /** [nFeatures, dIn], unit-norm rows in random directions. */
  readonly dictionary: Float32Array;
  /** p_f, the probability feature f is active in a row; sums to meanActive. */
  readonly frequencies: Float64Array;
  readonly #features: FeatureStream[];
  readonly #noiseRng: Rng;
  #spareNormal: number | null = null;
  #rowsDone = 0;

  constructor(o: GroundTruthOptions) {
    const positiveInt = (v: number) => Number.isSafeInteger(v) && v > 0;
    if (!positiveInt(o.dIn)) throw new ValidationError(`Expected a positive integer for dIn but received ${o.dIn}`);
    if (!positiveInt(o.nFeatures)) throw new ValidationError(`Expected a positive integer for nFeatures but received ${o.nFeatures}`);
    if (!(o.meanActive > 0)) throw new ValidationError(`Expected a positive number for meanActive but received ${o.meanActive}`);
    if (!(o.noise >= 0) || !Number.isFinite(o.noise)) throw new ValidationError(`Expected a finite number >= 0 for noise but received ${o.noise}`);
    if (!Number.isInteger(o.seed)) throw new ValidationError(`Expected an integer for seed but received ${o.seed}`);
    this.dIn = o.dIn;
    this.nFeatures = o.nFeatures;
    this.noise = o.noise;

    const rng = new Rng(streamSeed(o.seed, -1));
    this.dictionary = rng.fillNormal(new Float32Array(o.nFeatures * o.dIn));
    for (let f = 0; f < o.nFeatures; f++) {
      const row = this.dictionary.subarray(f * o.dIn, (f + 1) * o.dIn);
      let n = 0;
      for (const v of row) n += v * v;
      if (n === 0) row[0] = n = 1; // astronomically unlikely; keeps the row a unit vector
      const inv = 1 / Math.sqrt(n);
      for (let i = 0; i < o.dIn; i++) row[i]! *= inv;
    }

    const weights = Float64Array.from({ length: o.nFeatures }, (_, f) => 1 / Math.sqrt(f + FREQUENCY_OFFSET));
    const total = weights.reduce((a, b) => a + b, 0);
    this.frequencies = weights.map((w) => (o.meanActive * w) / total);
    if (this.frequencies[0]! >= 1) {
      throw new ValidationError(
        `Expected meanActive well below nFeatures (the most frequent feature would be active with probability ${this.frequencies[0]!.toFixed(3)}) but received meanActive ${o.meanActive} for ${o.nFeatures} features`,
      );
    }

    this.#features = Array.from(this.frequencies, (p, f) => {
      const stream: FeatureStream = { rng: new Rng(streamSeed(o.seed, f)), nextRow: 0, logMiss: Math.log1p(-p) };
      stream.nextRow = this.#gap(stream);
      return stream;
    });
    this.#noiseRng = new Rng(streamSeed(o.seed, o.nFeatures));
  }

  /** Rows generated so far (the absolute index of the next row sample() returns). */
  get rowsSampled(): number {
    return this.#rowsDone;
  }

  /** The next `rows` rows, [rows, dIn] row-major; consecutive calls continue the stream. */
  sample(rows: number): Float32Array {
    return this.#generate(rows, null);
  }

  /**
   * Like sample(), plus the true sparse codes of those rows (CSR over the nFeatures features,
   * ascending index): x = codes decoded through `dictionary`, plus noise.
   */
  sampleWithCodes(rows: number): { x: Float32Array; codes: SparseCodes } {
    const active: ActiveEntry[] = [];
    const x = this.#generate(rows, active);
    const indptr = new Uint32Array(rows + 1);
    for (const a of active) indptr[a.row + 1]!++;
    for (let r = 0; r < rows; r++) indptr[r + 1]! += indptr[r]!;
    const fill = indptr.slice(0, rows);
    const indices = new Int32Array(active.length);
    const values = new Float32Array(active.length);
    // Within a row, `active` lists features in ascending order, so indices come out ascending.
    for (const a of active) {
      const q = fill[a.row]!++;
      indices[q] = a.feature;
      values[q] = a.value;
    }
    return { x, codes: { rows, dSae: this.nFeatures, indptr, indices, values } };
  }

  #generate(rows: number, active: ActiveEntry[] | null): Float32Array {
    if (!Number.isSafeInteger(rows) || rows < 0) throw new ValidationError(`Expected an integer >= 0 for rows but received ${rows}`);
    const { dIn, dictionary } = this;
    const out = new Float32Array(rows * dIn);
    const start = this.#rowsDone;
    const end = start + rows;

    // Noise first (its own stream, row-major), then each feature adds into the rows it is
    // active in. Features are swept one block of rows at a time so the block stays in cache.
    if (this.noise > 0) this.#addNoise(out);
    for (let blockStart = start; blockStart < end; blockStart += BLOCK_ROWS) {
      const blockEnd = Math.min(end, blockStart + BLOCK_ROWS);
      for (let f = 0; f < this.nFeatures; f++) {
        const s = this.#features[f]!;
        const dirAt = f * dIn;
        while (s.nextRow < blockEnd) {
          const c = MAGNITUDE_MIN + s.rng.uniform();
          const row = s.nextRow - start;
          const outAt = row * dIn;
          for (let i = 0; i < dIn; i++) out[outAt + i]! += c * dictionary[dirAt + i]!;
          if (active) active.push({ row, feature: f, value: c });
          s.nextRow += 1 + this.#gap(s);
        }
      }
    }
    this.#rowsDone = end;
    return out;
  }

  /** Rows skipped before the feature's next active row: Geometric(p_f) on {0, 1, ...}. */
  #gap(s: FeatureStream): number {
    const u = 1 - s.rng.uniform(); // (0, 1]
    const g = Math.floor(Math.log(u) / s.logMiss);
    return Number.isFinite(g) ? g : Number.MAX_SAFE_INTEGER; // p = 0 never fires
  }

  /** Adds noise * N(0, 1) to every element: Marsaglia's polar method, both outputs used. */
  #addNoise(out: Float32Array): void {
    let q = 0;
    if (this.#spareNormal !== null && out.length > 0) {
      out[q++]! += this.noise * this.#spareNormal;
      this.#spareNormal = null;
    }
    const rng = this.#noiseRng;
    while (q < out.length) {
      let u: number;
      let v: number;
      let s: number;
      do {
        u = 2 * rng.uniform() - 1;
        v = 2 * rng.uniform() - 1;
        s = u * u + v * v;
      } while (s >= 1 || s === 0);
      const m = Math.sqrt((-2 * Math.log(s)) / s);
      out[q++]! += this.noise * u * m;
      if (q < out.length) out[q++]! += this.noise * v * m;
      else this.#spareNormal = v * m; // carried into the next call: chunk sizes do not matter
    }
  }
}

export interface FeatureRecovery {
  /** Number of true features whose best decoder row has cosine > threshold. */
  recovered: number;
  /** recovered / nFeatures. */
  fraction: number;
  /** Per true feature, the max cosine similarity with any decoder row (0 for zero rows). */
  maxCos: Float32Array;
}

/**
 * For each true feature (row of `dictionary`, [nFeatures, dIn]), the max cosine similarity with
 * any row of `W_dec` ([dSae, dIn]); a feature counts as recovered above `threshold`. Cosine is
 * signed: a decoder row pointing the opposite way does not recover a non-negative feature.
 */
export function featureRecovery(
  dictionary: Float32Array,
  nFeatures: number,
  W_dec: Float32Array,
  dSae: number,
  dIn: number,
  threshold = 0.9,
): FeatureRecovery {
  if (dictionary.length !== nFeatures * dIn) {
    throw new ValidationError(`Expected ${nFeatures}*${dIn} elements for dictionary but received ${dictionary.length}`);
  }
  if (W_dec.length !== dSae * dIn) throw new ValidationError(`Expected ${dSae}*${dIn} elements for W_dec but received ${W_dec.length}`);
  const norms = (m: Float32Array, rows: number) =>
    Float64Array.from({ length: rows }, (_, r) => {
      let n = 0;
      for (let i = 0; i < dIn; i++) n += m[r * dIn + i]! ** 2;
      return Math.sqrt(n);
    });
  const dictNorm = norms(dictionary, nFeatures);
  const decNorm = norms(W_dec, dSae);
  const maxCos = new Float32Array(nFeatures);
  let recovered = 0;
  for (let f = 0; f < nFeatures; f++) {
    let best = 0;
    if (dictNorm[f]! > 0 && dSae > 0) {
      best = -1;
      for (let j = 0; j < dSae; j++) {
        let dot = 0;
        for (let i = 0; i < dIn; i++) dot += dictionary[f * dIn + i]! * W_dec[j * dIn + i]!;
        const cos = decNorm[j]! > 0 ? dot / (dictNorm[f]! * decNorm[j]!) : 0;
        if (cos > best) best = cos;
      }
    }
    maxCos[f] = best;
    if (best > threshold) recovered++;
  }
  return { recovered, fraction: nFeatures > 0 ? recovered / nFeatures : 0, maxCos };
}

/**
 * Writes the next `rows` rows of `gt` as a [rows, dIn] float32 .npy, `chunkRows` at a time (so
 * memory stays bounded), atomically: a temporary sibling renamed into place on success.
 */
export async function writeGroundTruthNpy(file: string, gt: GroundTruth, rows: number, chunkRows?: number): Promise<void> {
  if (!Number.isSafeInteger(rows) || rows < 0) throw new ValidationError(`Expected an integer >= 0 for rows but received ${rows}`);
  const chunk = chunkRows ?? Math.max(1, Math.floor((8 << 20) / (4 * gt.dIn)));
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new ValidationError(`Expected a positive integer for chunkRows but received ${chunkRows}`);
  const header = encodeNpyHeader([rows, gt.dIn], '<f4');
  await writeFileAtomic(file, async (fh) => {
    await writeAt(fh, header, 0);
    let position = header.length;
    for (let done = 0; done < rows; done += chunk) {
      const bytes = bytesOf(gt.sample(Math.min(chunk, rows - done)));
      await writeAt(fh, bytes, position);
      position += bytes.length;
    }
  });
}

export interface TranscoderGroundTruthOptions extends GroundTruthOptions {
  dOut: number;
  /**
   * Scale of a planted dense linear map S [dOut, dIn] (Gaussian entries * skipScale /
   * sqrt(dIn)) added to the output as x S^T: what a skip transcoder's W_skip must recover. 0: none.
   */
  skipScale?: number;
  /** Std of the output's own noise per dimension (default: the input's noise). */
  outputNoise?: number;
}

/**
 * Paired (input, output) rows from a KNOWN sparse map, for transcoder training: the input is a
 * GroundTruth's (x = codes D_in + noise), and the output reuses the same sparse codes through
 * a second known dictionary D_out [nFeatures, dOut] (unit rows): y = codes D_out + x S^T +
 * noise. A correct transcoder ends with decoder rows along D_out's rows (featureRecovery on
 * outputDictionary) and, with a skip term, W_skip close to S. Chunk-invariant like GroundTruth.
 */
export class TranscoderGroundTruth {
  readonly input: GroundTruth;
  readonly dOut: number;
  /** [nFeatures, dOut], unit-norm rows. */
  readonly outputDictionary: Float32Array;
  /** [dOut, dIn] (SAELens's W_skip layout), or undefined without a skip map. */
  readonly skip: Float32Array | undefined;
  readonly #noise: number;
  readonly #noiseRng: Rng;

  constructor(o: TranscoderGroundTruthOptions) {
    if (!Number.isSafeInteger(o.dOut) || o.dOut < 1) throw new ValidationError(`Expected a positive integer for dOut but received ${o.dOut}`);
    this.input = new GroundTruth(o);
    this.dOut = o.dOut;
    const rng = new Rng(streamSeed(o.seed, 0x7fff_fff0));
    this.outputDictionary = rng.fillNormal(new Float32Array(o.nFeatures * o.dOut));
    for (let f = 0; f < o.nFeatures; f++) {
      let n = 0;
      for (let i = 0; i < o.dOut; i++) n += this.outputDictionary[f * o.dOut + i]! ** 2;
      for (let i = 0; i < o.dOut; i++) this.outputDictionary[f * o.dOut + i]! /= Math.sqrt(n);
    }
    const skipScale = o.skipScale ?? 0;
    this.skip = skipScale > 0 ? rng.fillNormal(new Float32Array(o.dOut * o.dIn), skipScale / Math.sqrt(o.dIn)) : undefined;
    this.#noise = o.outputNoise ?? o.noise;
    this.#noiseRng = new Rng(streamSeed(o.seed, 0x7fff_fff1));
  }

  /** The next ROWS pairs: x [rows, dIn], y [rows, dOut]. */
  samplePairs(rows: number): { x: Float32Array; y: Float32Array } {
    const { x, codes } = this.input.sampleWithCodes(rows);
    const dIn = this.input.dIn, dOut = this.dOut;
    const y = new Float32Array(rows * dOut);
    for (let r = 0; r < rows; r++) {
      const out = y.subarray(r * dOut, (r + 1) * dOut);
      for (let p = codes.indptr[r]!; p < codes.indptr[r + 1]!; p++) {
        const f = codes.indices[p]!, c = codes.values[p]!;
        for (let i = 0; i < dOut; i++) out[i]! += c * this.outputDictionary[f * dOut + i]!;
      }
      if (this.skip) {
        const xr = x.subarray(r * dIn, (r + 1) * dIn);
        for (let i = 0; i < dOut; i++) {
          let s = 0;
          for (let j = 0; j < dIn; j++) s += this.skip[i * dIn + j]! * xr[j]!;
          out[i]! += s;
        }
      }
      if (this.#noise > 0) for (let i = 0; i < dOut; i++) out[i]! += this.#noise * this.#noiseRng.normal();
    }
    return { x, y };
  }
}
