// Streaming per-feature statistics over sparse codes, in memory that does not grow with the
// corpus: for every latent its firing count, sum and max of activations, a histogram of
// nonzero activations, the top-N max-activating tokens with their contexts, and a uniform
// reservoir of firing tokens (with contexts; Algorithm L: random draws only at replacements)
// from which activation-quantile samples are drawn.
//
// Codes arrive as whole context windows (rows r .. r + windowLength of one model window), so a
// context (the tokens before and after the activating one, and the feature's value at each)
// is cut from the window as it passes; it never crosses a window boundary, as the model's
// attention does not.
//
// Exactness: counts, sums (float64), max, histogram counts and the top-N set are exact and
// deterministic (ties in value go to the earlier row). The reservoir is random (seeded). Two
// accumulators over disjoint parts of a stream merge into the one a single pass would give
// (the reservoir as a weighted sample), so shards can be analysed separately; the state can be
// saved to and loaded from a safetensors file to resume.

import { ValidationError } from '../errors.js';
import type { SparseCodes } from '../codes.js';
import { SafetensorsReader } from '../formats/safetensors.js';
import { writeSafetensors } from '../formats/safetensorsWriter.js';

export interface FeatureStatsOptions {
  dSae: number;
  /** Max-activating examples kept per feature (default 20). */
  topN?: number;
  /** Tokens kept before / after the activating token (default 12 / 4). */
  contextLeft?: number;
  contextRight?: number;
  /** Reservoir size per feature for the quantile samples (default 25). */
  reservoir?: number;
  /** Histogram: log-spaced bins, this many per decade from histMin to histMax (defaults 8, 1e-4, 1e4). */
  histBinsPerDecade?: number;
  histMin?: number;
  histMax?: number;
  seed?: number;
}

/** One stored example: the context around an activating token. */
export interface StoredExample {
  row: number;
  value: number;
  tokenIds: number[];
  values: number[];
  /** Index of the activating token within tokenIds. */
  at: number;
}

export class FeatureStats {
  readonly dSae: number;
  readonly topN: number;
  readonly left: number;
  readonly right: number;
  readonly width: number;
  readonly reservoirSize: number;
  /** Histogram bin edges (nBins + 1), log-spaced; values below the first edge land in bin 0, above the last in the last bin. */
  readonly edges: Float64Array;
  /** Tokens counted (ignored tokens excluded): the denominator of firing frequencies. */
  tokensSeen = 0;
  /** Rows added, ignored ones included: where the next add() continues the row numbering. */
  rowsSeen = 0;
  /**
   * The per-event hot state of feature f in one 32-byte record: [count, sum, max, topMin].
   * topMin is the smallest value the full top-N heap holds (-Infinity until it is full), so
   * most firing tokens are turned away without touching the heap.
   */
  private readonly rec: Float64Array;
  /** Algorithm L state per feature: W and the count at which the next reservoir replacement happens. */
  private readonly resW: Float64Array;
  private readonly resNext: Float64Array;
  readonly hist: Int32Array;
  // Top-N per feature as a min-heap (slot 0 = smallest kept), with the contexts in fixed slots.
  private readonly topSize: Int32Array;
  private readonly topValue: Float32Array;
  private readonly topRow: Float64Array;
  /** Heap position -> context slot: sifting moves these ints, never the contexts. */
  private readonly topSlot: Int32Array;
  private readonly topCtx: ContextStore;
  // Reservoir per feature (Algorithm R), same context layout.
  private readonly resSize: Int32Array;
  private readonly resValue: Float32Array;
  private readonly resRow: Float64Array;
  private readonly resCtx: ContextStore;
  private rngState: number;
  private readonly options: Required<FeatureStatsOptions>;

  constructor(o: FeatureStatsOptions) {
    const opt: Required<FeatureStatsOptions> = {
      dSae: o.dSae,
      topN: o.topN ?? 20,
      contextLeft: o.contextLeft ?? 12,
      contextRight: o.contextRight ?? 4,
      reservoir: o.reservoir ?? 25,
      histBinsPerDecade: o.histBinsPerDecade ?? 8,
      histMin: o.histMin ?? 1e-4,
      histMax: o.histMax ?? 1e4,
      seed: o.seed ?? 1,
    };
    for (const [k, v] of Object.entries(opt)) {
      const ok = k === 'histMin' || k === 'histMax' ? v > 0 && Number.isFinite(v) : Number.isInteger(v) && v >= (k === 'contextLeft' || k === 'contextRight' || k === 'seed' ? 0 : 1);
      if (!ok) throw new ValidationError(`Expected a valid value for feature statistics option ${k} but received ${v}`);
    }
    if (!(opt.histMax > opt.histMin)) throw new ValidationError(`histMax (${opt.histMax}) must exceed histMin (${opt.histMin})`);
    this.options = opt;
    this.dSae = opt.dSae;
    this.topN = opt.topN;
    this.left = opt.contextLeft;
    this.right = opt.contextRight;
    this.width = this.left + 1 + this.right;
    this.reservoirSize = opt.reservoir;
    const decades = Math.log10(opt.histMax / opt.histMin);
    const nBins = Math.max(1, Math.round(decades * opt.histBinsPerDecade));
    this.edges = new Float64Array(nBins + 1);
    for (let i = 0; i <= nBins; i++) this.edges[i] = opt.histMin * 10 ** ((i * decades) / nBins);
    const d = this.dSae;
    this.rec = new Float64Array(d * 4);
    for (let f = 0; f < d; f++) this.rec[4 * f + 3] = -Infinity;
    this.resW = new Float64Array(d);
    this.resNext = new Float64Array(d);
    this.hist = new Int32Array(d * nBins);
    this.topSize = new Int32Array(d);
    this.topValue = new Float32Array(d * this.topN);
    this.topRow = new Float64Array(d * this.topN);
    this.topSlot = new Int32Array(d * this.topN);
    this.topCtx = new ContextStore(d * this.topN, this.width);
    this.resSize = new Int32Array(d);
    this.resValue = new Float32Array(d * this.reservoirSize);
    this.resRow = new Float64Array(d * this.reservoirSize);
    this.resCtx = new ContextStore(d * this.reservoirSize, this.width);
    this.rngState = opt.seed >>> 0 || 1;
  }

  get nBins(): number {
    return this.edges.length - 1;
  }

  /** Tokens feature F fired on. */
  countOf(f: number): number {
    return this.rec[4 * f]!;
  }

  /** Sum of F's activations (float64). */
  sumOf(f: number): number {
    return this.rec[4 * f + 1]!;
  }

  maxOf(f: number): number {
    return this.rec[4 * f + 2]!;
  }

  /** Every feature's count, as a new array. */
  get count(): Float64Array {
    return Float64Array.from({ length: this.dSae }, (_, f) => this.rec[4 * f]!);
  }

  get sum(): Float64Array {
    return Float64Array.from({ length: this.dSae }, (_, f) => this.rec[4 * f + 1]!);
  }

  get max(): Float32Array {
    return Float32Array.from({ length: this.dSae }, (_, f) => this.rec[4 * f + 2]!);
  }

  /** Histogram bin of a positive value: the last edge <= value (clamped to the first/last bin). */
  binOf(v: number): number {
    const e = this.edges;
    let lo = 0;
    let hi = e.length - 2;
    if (v < e[1]!) return 0;
    if (v >= e[hi]!) return hi;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (e[mid]! <= v) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Adds whole context windows: CODES has windows * windowLength rows, TOKENIDS their token
   * ids, FIRSTROW the stream position of codes row 0 (rows number tokens across the stream).
   */
  add(codes: SparseCodes, tokenIds: ArrayLike<number>, windowLength: number, firstRow: number, ignore?: ReadonlySet<number>): void {
    const rows = codes.indptr.length - 1;
    if (codes.dSae !== this.dSae) throw new ValidationError(`codes have d_sae ${codes.dSae}, the statistics ${this.dSae}`);
    if (tokenIds.length !== rows) throw new ValidationError(`${rows} code rows but ${tokenIds.length} token ids`);
    if (!Number.isInteger(windowLength) || windowLength < 1 || rows % windowLength !== 0) {
      throw new ValidationError(`${rows} rows are not whole windows of ${windowLength} tokens`);
    }
    const { indptr, indices, values } = codes;
    let counted = 0;
    const nb = this.nBins;
    const R = this.reservoirSize;
    for (let r = 0; r < rows; r++) {
      // Ignored tokens (BOS: its residual stream is the same in every window) are neither
      // counted nor chosen, but still show in other tokens' contexts.
      if (ignore?.has(tokenIds[r]!)) continue;
      counted++;
      for (let i = indptr[r]!; i < indptr[r + 1]!; i++) {
        const v = values[i]!;
        if (!(v > 0)) continue; // codes hold nonzeros; a negative value (standard SAEs cannot) is not "firing"
        const f = indices[i]!;
        const o = 4 * f;
        const rec = this.rec;
        const n = rec[o]! + 1;
        rec[o] = n;
        rec[o + 1]! += v;
        if (v > rec[o + 2]!) rec[o + 2] = v;
        this.hist[f * nb + this.binOf(v)]!++;
        if (v >= rec[o + 3]!) {
          const slot = this.offerTop(f, v, firstRow + r);
          if (slot >= 0) this.cutInto(this.topCtx, slot, codes, tokenIds, windowLength, r, f);
        }
        // Reservoir by Algorithm L: the first R fill it, then only the tokens at the drawn
        // skips replace a random slot (no random number per token).
        let j = -1;
        if (n <= R) {
          j = n - 1;
          this.resSize[f] = n;
          if (n === R) this.reskip(f, n, Math.exp(Math.log(this.uniform()) / R));
        } else if (n === this.resNext[f]) {
          j = Math.floor(this.random() * R);
          this.reskip(f, n, this.resW[f]! * Math.exp(Math.log(this.uniform()) / R));
        }
        if (j >= 0) {
          const rs = f * R + j;
          this.resValue[rs] = v;
          this.resRow[rs] = firstRow + r;
          this.cutInto(this.resCtx, rs, codes, tokenIds, windowLength, r, f);
        }
      }
    }
    this.tokensSeen += counted;
    this.rowsSeen += rows;
  }

  /** Top-N examples of feature F, by value descending (ties: earlier row first). */
  top(f: number): StoredExample[] {
    const out: StoredExample[] = [];
    for (let s = 0; s < this.topSize[f]!; s++) {
      const pos = f * this.topN + s;
      out.push({ ...this.topCtx.get(this.topSlot[pos]!), value: this.topValue[pos]!, row: this.topRow[pos]! });
    }
    return out.sort((a, b) => b.value - a.value || a.row - b.row);
  }

  /** The reservoir of feature F (a uniform sample of its firing tokens), by value ascending. */
  samples(f: number): StoredExample[] {
    const out: StoredExample[] = [];
    for (let s = 0; s < this.resSize[f]!; s++) {
      const slot = f * this.reservoirSize + s;
      out.push({ ...this.resCtx.get(slot), value: this.resValue[slot]!, row: this.resRow[slot]! });
    }
    return out.sort((a, b) => a.value - b.value || a.row - b.row);
  }

  /** Quantile-bin samples: the reservoir split into BINS equal-count groups, up to PERBIN from each. */
  quantileSamples(f: number, bins = 5, perBin = 5): { label: string; examples: StoredExample[] }[] {
    const s = this.samples(f);
    const out: { label: string; examples: StoredExample[] }[] = [];
    for (let b = 0; b < bins; b++) {
      const group = s.slice(Math.floor((b * s.length) / bins), Math.floor(((b + 1) * s.length) / bins));
      if (group.length === 0) continue;
      const step = Math.max(1, group.length / perBin);
      const picked: StoredExample[] = [];
      for (let i = 0; i < group.length && picked.length < perBin; i += step) picked.push(group[Math.floor(i)]!);
      out.push({ label: `quantile ${b + 1} of ${bins} (${group[0]!.value.toPrecision(3)} to ${group[group.length - 1]!.value.toPrecision(3)})`, examples: picked.reverse() });
    }
    return out.reverse();
  }

  /** Folds OTHER (statistics over a disjoint part of the same stream) into this one. */
  merge(other: FeatureStats): void {
    const same = (['dSae', 'topN', 'left', 'right', 'reservoirSize'] as const).every((k) => this[k] === other[k]) && this.edges.every((e, i) => e === other.edges[i]);
    if (!same) throw new ValidationError('Cannot merge feature statistics made with different options');
    for (let f = 0; f < this.dSae; f++) {
      const nA = this.rec[4 * f]!;
      const nB = other.rec[4 * f]!;
      this.rec[4 * f] = nA + nB;
      this.rec[4 * f + 1]! += other.rec[4 * f + 1]!;
      if (other.rec[4 * f + 2]! > this.rec[4 * f + 2]!) this.rec[4 * f + 2] = other.rec[4 * f + 2]!;
      for (let s = 0; s < other.topSize[f]!; s++) {
        const pos = f * this.topN + s;
        const ex = other.topCtx.get(other.topSlot[pos]!);
        const slot = this.offerTop(f, other.topValue[pos]!, other.topRow[pos]!);
        if (slot >= 0) this.topCtx.put(slot, ex);
      }
      this.mergeReservoir(f, nA, other, nB);
      // Algorithm L goes on from W ~ its mean R/(n+1) after n tokens (exact in distribution
      // only for an unmerged stream; close for large n).
      const n = nA + nB;
      if (n >= this.reservoirSize) this.reskip(f, n, Math.min(0.999999, this.reservoirSize / (n + 1)));
    }
    for (let i = 0; i < this.hist.length; i++) this.hist[i]! += other.hist[i]!;
    this.tokensSeen += other.tokensSeen;
    this.rowsSeen += other.rowsSeen;
  }

  /** Saves the whole state (resumable; mergeable) as a safetensors file. */
  async save(path: string): Promise<void> {
    const t = this.topCtx;
    const r = this.resCtx;
    await writeSafetensors(
      path,
      {
        rec: { dtype: 'F64', shape: [this.dSae, 4], data: this.rec },
        res_w: { dtype: 'F64', shape: [this.dSae], data: this.resW },
        res_next: { dtype: 'F64', shape: [this.dSae], data: this.resNext },
        hist: { dtype: 'I32', shape: [this.dSae, this.nBins], data: this.hist },
        top_size: { dtype: 'I32', shape: [this.dSae], data: this.topSize },
        top_value: { dtype: 'F32', shape: [this.topValue.length], data: this.topValue },
        top_row: { dtype: 'F64', shape: [this.topRow.length], data: this.topRow },
        top_slot: { dtype: 'I32', shape: [this.topSlot.length], data: this.topSlot },
        top_tokens: { dtype: 'I32', shape: [t.tokens.length], data: t.tokens },
        top_values: { dtype: 'F32', shape: [t.values.length], data: t.values },
        top_meta: { dtype: 'I32', shape: [t.meta.length], data: t.meta },
        res_size: { dtype: 'I32', shape: [this.dSae], data: this.resSize },
        res_value: { dtype: 'F32', shape: [this.resValue.length], data: this.resValue },
        res_row: { dtype: 'F64', shape: [this.resRow.length], data: this.resRow },
        res_tokens: { dtype: 'I32', shape: [r.tokens.length], data: r.tokens },
        res_values: { dtype: 'F32', shape: [r.values.length], data: r.values },
        res_meta: { dtype: 'I32', shape: [r.meta.length], data: r.meta },
      },
      { saekit_feature_stats: JSON.stringify({ version: 2, options: this.options, tokensSeen: this.tokensSeen, rowsSeen: this.rowsSeen, rng: this.rngState }) },
    );
  }

  static async load(path: string): Promise<FeatureStats> {
    const st = await SafetensorsReader.open(path);
    try {
      const raw = st.metadata?.['saekit_feature_stats'];
      if (!raw) throw new ValidationError(`${path} is not a saekit feature-statistics state (no saekit_feature_stats metadata)`);
      const meta = JSON.parse(raw) as { options: FeatureStatsOptions; tokensSeen: number; rowsSeen: number; rng: number };
      const s = new FeatureStats(meta.options);
      s.tokensSeen = meta.tokensSeen;
      s.rowsSeen = meta.rowsSeen;
      s.rngState = meta.rng;
      const fill = async (name: string, into: { set(a: ArrayLike<number>): void; length: number }) => {
        const a = (await st.readTensor(name)) as unknown as ArrayLike<number>;
        if (a.length !== into.length) throw new ValidationError(`${path}: tensor ${name} has ${a.length} values, expected ${into.length}`);
        into.set(a);
      };
      for (const [name, arr] of [
        ['rec', s.rec], ['res_w', s.resW], ['res_next', s.resNext], ['hist', s.hist], ['top_size', s.topSize], ['top_value', s.topValue], ['top_row', s.topRow], ['top_slot', s.topSlot],
        ['top_tokens', s.topCtx.tokens], ['top_values', s.topCtx.values], ['top_meta', s.topCtx.meta], ['res_size', s.resSize], ['res_value', s.resValue],
        ['res_row', s.resRow], ['res_tokens', s.resCtx.tokens], ['res_values', s.resCtx.values], ['res_meta', s.resCtx.meta],
      ] as const) {
        await fill(name, arr);
      }
      return s;
    } finally {
      await st.close();
    }
  }

  // ---- internals ----

  /** Heap position A ranks below B: smaller value, or equal value and later row. */
  private below(a: number, b: number): boolean {
    const va = this.topValue[a]!;
    const vb = this.topValue[b]!;
    return va < vb || (va === vb && this.topRow[a]! > this.topRow[b]!);
  }

  private swapTop(a: number, b: number): void {
    const v = this.topValue[a]!;
    this.topValue[a] = this.topValue[b]!;
    this.topValue[b] = v;
    const r = this.topRow[a]!;
    this.topRow[a] = this.topRow[b]!;
    this.topRow[b] = r;
    const s = this.topSlot[a]!;
    this.topSlot[a] = this.topSlot[b]!;
    this.topSlot[b] = s;
  }

  /**
   * Offers (v, row) to F's top-N min-heap. Returns the context slot to fill when it got in
   * (the evicted example's slot when the heap was full), else -1.
   */
  private offerTop(f: number, v: number, row: number): number {
    const base = f * this.topN;
    const size = this.topSize[f]!;
    if (size < this.topN) {
      let pos = base + size;
      this.topSize[f] = size + 1;
      this.topValue[pos] = v;
      this.topRow[pos] = row;
      this.topSlot[pos] = pos;
      const slot = pos;
      while (pos > base) {
        const parent = base + ((pos - base - 1) >> 1);
        if (!this.below(pos, parent)) break;
        this.swapTop(pos, parent);
        pos = parent;
      }
      if (size + 1 === this.topN) this.rec[4 * f + 3] = this.topValue[base]!;
      return slot;
    }
    const minV = this.topValue[base]!;
    if (v < minV || (v === minV && row > this.topRow[base]!)) return -1;
    const slot = this.topSlot[base]!;
    this.topValue[base] = v;
    this.topRow[base] = row;
    let pos = 0;
    for (;;) {
      const l = 2 * pos + 1;
      const r = l + 1;
      let m = pos;
      if (l < this.topN && this.below(base + l, base + m)) m = l;
      if (r < this.topN && this.below(base + r, base + m)) m = r;
      if (m === pos) break;
      this.swapTop(base + pos, base + m);
      pos = m;
    }
    this.rec[4 * f + 3] = this.topValue[base]!;
    return slot;
  }

  private putReservoir(f: number, s: number, v: number, row: number, ex: StoredExample): void {
    const slot = f * this.reservoirSize + s;
    this.resValue[slot] = v;
    this.resRow[slot] = row;
    this.resCtx.put(slot, ex);
  }

  /** Weighted merge of two uniform reservoirs (Efraimidis-Spirakis keys u^(1/w)). */
  private mergeReservoir(f: number, nA: number, other: FeatureStats, nB: number): void {
    const a = this.samples(f);
    const b = other.samples(f);
    if (b.length === 0) return;
    const wA = a.length > 0 ? nA / a.length : 0;
    const wB = nB / b.length;
    const keyed = [...a.map((e) => ({ e, w: wA })), ...b.map((e) => ({ e, w: wB }))].map(({ e, w }) => ({ e, key: Math.log(this.random() || Number.MIN_VALUE) / w }));
    keyed.sort((x, y) => y.key - x.key);
    const kept = keyed.slice(0, this.reservoirSize);
    this.resSize[f] = kept.length;
    kept.forEach(({ e }, s) => this.putReservoir(f, s, e.value, e.row, e));
  }

  /** Writes the context of codes row R (within its window), with feature F's value at each token, into SLOT. */
  private cutInto(store: ContextStore, slot: number, codes: SparseCodes, tokenIds: ArrayLike<number>, windowLength: number, r: number, f: number): void {
    const w0 = r - (r % windowLength);
    const from = Math.max(w0, r - this.left);
    const to = Math.min(w0 + windowLength - 1, r + this.right);
    const o = slot * store.width;
    for (let q = from; q <= to; q++) {
      store.tokens[o + q - from] = tokenIds[q]!;
      store.values[o + q - from] = valueIn(codes, q, f);
    }
    store.meta[2 * slot] = to - from + 1;
    store.meta[2 * slot + 1] = r - from;
  }

  /** Algorithm L: the count at which F's next replacement happens, from W after N tokens. */
  private reskip(f: number, n: number, w: number): void {
    this.resW[f] = w;
    this.resNext[f] = n + Math.floor(Math.log(this.uniform()) / Math.log1p(-w)) + 1;
  }

  /** A uniform number in (0, 1): never 0, so its log is finite. */
  private uniform(): number {
    return this.random() || 2 ** -33;
  }

  /** mulberry32, seeded: reservoirs are reproducible run to run. */
  private random(): number {
    let t = (this.rngState = (this.rngState + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Feature F's value in codes row R (rows hold ascending indices: binary search), 0 if absent. */
function valueIn(codes: SparseCodes, r: number, f: number): number {
  let lo = codes.indptr[r]!;
  let hi = codes.indptr[r + 1]! - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const x = codes.indices[mid]!;
    if (x === f) return codes.values[mid]!;
    if (x < f) lo = mid + 1;
    else hi = mid - 1;
  }
  return 0;
}

/** Fixed-size context slots: WIDTH token ids and values each, plus [length, at]. */
class ContextStore {
  readonly tokens: Int32Array;
  readonly values: Float32Array;
  readonly meta: Int32Array;
  constructor(
    slots: number,
    readonly width: number,
  ) {
    this.tokens = new Int32Array(slots * width);
    this.values = new Float32Array(slots * width);
    this.meta = new Int32Array(slots * 2);
  }
  put(slot: number, ex: { tokenIds: number[]; values: number[]; at: number }): void {
    const n = Math.min(ex.tokenIds.length, this.width);
    this.tokens.set(ex.tokenIds.slice(0, n), slot * this.width);
    this.values.set(ex.values.slice(0, n), slot * this.width);
    this.meta[2 * slot] = n;
    this.meta[2 * slot + 1] = ex.at;
  }
  get(slot: number): { tokenIds: number[]; values: number[]; at: number } {
    const n = this.meta[2 * slot]!;
    const o = slot * this.width;
    return { tokenIds: Array.from(this.tokens.subarray(o, o + n)), values: Array.from(this.values.subarray(o, o + n)), at: this.meta[2 * slot + 1]! };
  }
}
