// The Neuronpedia upload-batch export: every file it writes validates against the schema (with
// an Ajv compiled here, independently, from schema/neuronpedia-upload-batch.schema.json); a
// feature round-trips doc -> export -> read back; the limits (128 features a batch, 20 logits,
// 1024 tokens) hold; dead features are skipped and counted; bad input is refused with the
// feature and path named and nothing written; the schema itself rejects bad batches; and
// `saekit analyze --neuronpedia` writes one beside the dashboard, from the same documents.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { featureDoc } from '../src/analysis/analyze.js';
import { FeatureStats } from '../src/analysis/featureStats.js';
import type { LogitEffects } from '../src/analysis/logitEffects.js';
import {
  defaultNeuronpediaModelId,
  defaultNeuronpediaSource,
  neuronpediaFeature,
  readNeuronpediaExport,
  validateNeuronpediaBatch,
  writeNeuronpediaExport,
  type NeuronpediaBatch,
  type NeuronpediaFeature,
} from '../src/analysis/neuronpedia.js';
import { NEURONPEDIA_UPLOAD_BATCH_SCHEMA } from '../src/analysis/neuronpediaSchema.js';
import type { DashboardIndex, FeatureDoc } from '../src/analysis/types.js';
import type { SparseCodes } from '../src/codes.js';
import { FormatError, ValidationError } from '../src/errors.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { runCli } from './helpers/cli.js';
import { ensureDist } from './helpers/dist.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { leftovers, rng, tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('analysis.neuronpedia.test');
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

const SCHEMA_FILE = join(import.meta.dirname, '..', 'schema', 'neuronpedia-upload-batch.schema.json');
let schemaValidate: ReturnType<Ajv['compile']>;

/** The test's own validator: the schema file, a fresh Ajv. */
function schemaAccepts(batch: unknown): boolean {
  return schemaValidate(batch) as boolean;
}

const D_SAE = 300;
const FIRING = 280; // features 280..299 never fire: dead
const K = 25; // logit effects per side, more than Neuronpedia's 20
const tokenText = (id: number) => `t${id}`;
let docs: FeatureDoc[];

beforeAll(async () => {
  schemaValidate = new Ajv({ strict: true, allErrors: true }).compile(JSON.parse(await readFile(SCHEMA_FILE, 'utf8')) as object);
  // Real statistics over random codes, so the documents carry featureDoc's own bins and labels.
  const r = rng(seed);
  const ctx = 32;
  const rows = 64 * ctx;
  const indptr = new Uint32Array(rows + 1);
  const indices: number[] = [];
  const values: number[] = [];
  for (let row = 0; row < rows; row++) {
    const picked = [...new Set(Array.from({ length: 1 + Math.floor(r() * 6) }, () => Math.floor(r() * FIRING)))].sort((a, b) => a - b);
    for (const f of picked) {
      indices.push(f);
      values.push(Math.fround(0.01 + r() * 10));
    }
    indptr[row + 1] = indices.length;
  }
  // ~3.5 firings a row over 2048 rows: each of the FIRING features fires ~25 times (never firing: odds ~1e-11 each).
  const codes: SparseCodes = { rows, dSae: D_SAE, indptr, indices: Int32Array.from(indices), values: Float32Array.from(values) };
  const tokens = Int32Array.from({ length: rows }, () => Math.floor(r() * 1000));
  const stats = new FeatureStats({ dSae: D_SAE, topN: 8, seed: seed % 1000 });
  stats.add(codes, tokens, ctx, 0);
  const logits: LogitEffects = {
    posIds: Int32Array.from({ length: D_SAE * K }, () => Math.floor(r() * 1000)),
    posValues: Float32Array.from({ length: D_SAE * K }, (_, i) => 5 - (i % K) * 0.1 + r() * 0.01),
    negIds: Int32Array.from({ length: D_SAE * K }, () => Math.floor(r() * 1000)),
    negValues: Float32Array.from({ length: D_SAE * K }, (_, i) => -5 + (i % K) * 0.1 - r() * 0.01),
    k: K,
    histHeights: new Int32Array(0),
    histCenters: new Float32Array(0),
    histBins: 0,
  };
  docs = Array.from({ length: D_SAE }, (_, f) => featureDoc(stats, f, { modelId: 'm', hook: 'blocks.3.hook_resid_pre', tokenText, logits }));
});

/** A small valid batch to break by hand. */
function goodBatch(): NeuronpediaBatch {
  return {
    modelId: 'gpt2-small',
    source: '6-res-jb',
    features: [
      {
        index: 7,
        density: 0.01,
        topLogits: [{ token: ' the', value: 1.5 }],
        bottomLogits: [{ token: ' a', value: -1.5 }],
        explanations: [],
        activations: [{ tokens: ['a', 'b'], values: [0, 2], quantileMax: 2, quantileMin: 1, quantileFraction: 0.1 }],
      },
    ],
  };
}

function feature(i: number): NeuronpediaFeature {
  return { ...goodBatch().features[0]!, index: i };
}

describe('the schema', () => {
  it('schema/ holds the same document the code validates with', async () => {
    expect(JSON.parse(await readFile(SCHEMA_FILE, 'utf8'))).toEqual(NEURONPEDIA_UPLOAD_BATCH_SCHEMA);
  });

  it('accepts a well-formed batch and rejects hand-made bad ones (so it can fail)', () => {
    expect(schemaAccepts(goodBatch())).toBe(true);
    expect(() => validateNeuronpediaBatch(goodBatch())).not.toThrow();
    const bad: [string, (b: NeuronpediaBatch) => void][] = [
      ['129 features', (b) => (b.features = Array.from({ length: 129 }, (_, i) => feature(i)))],
      ['no features', (b) => (b.features = [])],
      ['missing activations', (b) => delete (b.features[0] as Partial<NeuronpediaFeature>).activations],
      ['empty activations', (b) => (b.features[0]!.activations = [])],
      ['21 topLogits', (b) => (b.features[0]!.topLogits = Array.from({ length: 21 }, (_, i) => ({ token: `x${i}`, value: i })))],
      ['21 bottomLogits', (b) => (b.features[0]!.bottomLogits = Array.from({ length: 21 }, (_, i) => ({ token: `x${i}`, value: -i })))],
      ['1025 tokens', (b) => (b.features[0]!.activations[0] = { ...b.features[0]!.activations[0]!, tokens: Array(1025).fill('x'), values: Array(1025).fill(0) })],
      ['an extra field in a feature', (b) => ((b.features[0] as unknown as Record<string, unknown>).maxActApprox = 2)],
      ['an extra top-level field', (b) => ((b as unknown as Record<string, unknown>).layer = 6)],
      ['an extra field in an activation', (b) => ((b.features[0]!.activations[0] as unknown as Record<string, unknown>).maxValue = 2)],
      ['an extra field in a logit', (b) => ((b.features[0]!.topLogits[0] as unknown as Record<string, unknown>).id = 3)],
      ['missing modelId', (b) => delete (b as Partial<NeuronpediaBatch>).modelId],
      ['a modelId with a space', (b) => (b.modelId = 'gpt2 small')],
      ['a negative index', (b) => (b.features[0]!.index = -1)],
      ['a fractional index', (b) => (b.features[0]!.index = 1.5)],
      ['density above 1', (b) => (b.features[0]!.density = 1.5)],
      ['a string value', (b) => ((b.features[0]!.activations[0]!.values as unknown[])[0] = '0')],
      ['an explanation without methodName', (b) => ((b.features[0]!.explanations as unknown[]) = [{ text: 'x', modelName: 'y' }])],
    ];
    for (const [what, breakIt] of bad) {
      const b = goodBatch();
      breakIt(b);
      expect(schemaAccepts(b), what).toBe(false);
      expect(() => validateNeuronpediaBatch(b), what).toThrow(ValidationError);
    }
  });

  it('what JSON Schema cannot say is checked in code: values as long as tokens, bounds in order, unique indices', () => {
    const b = goodBatch();
    b.features[0]!.activations[0]!.values = [1];
    expect(schemaAccepts(b)).toBe(true);
    expectThrow(() => validateNeuronpediaBatch(b, 'b.json'), ValidationError, 'b.json', 'feature 7', '/features/0/activations/0', '1 values for 2 tokens');
    const c = goodBatch();
    c.features[0]!.activations[0]!.quantileMin = 3;
    expectThrow(() => validateNeuronpediaBatch(c), ValidationError, 'feature 7', 'quantileMin 3 exceeds quantileMax 2');
    const d = goodBatch();
    d.features.push(feature(7));
    expectThrow(() => validateNeuronpediaBatch(d), ValidationError, 'feature 7 appears twice');
    const e = goodBatch();
    e.features.push(feature(9));
    (e.features[1]!.topLogits[0] as unknown as Record<string, unknown>).extra = 1;
    expectThrow(() => validateNeuronpediaBatch(e, 'e.json'), ValidationError, 'e.json', 'feature 9', '/features/1/topLogits/0', 'unknown field "extra"');
  });
});

describe('writeNeuronpediaExport', () => {
  it('writes batches of <= 128 that validate, skips and counts dead features, and reads back', async () => {
    const root = await dirs.make();
    const out = join(root, 'np');
    const manifest = await writeNeuronpediaExport(out, docs, { modelId: 'tiny-gpt2', source: '3-saekit' });
    expect(manifest).toMatchObject({ modelId: 'tiny-gpt2', source: '3-saekit', count: FIRING, skipped: D_SAE - FIRING, files: ['batch-0000.json', 'batch-0001.json', 'batch-0002.json'] });
    expect((await readdir(out)).sort()).toEqual([...manifest.files, 'manifest.json'].sort());
    const sizes: number[] = [];
    for (const file of manifest.files) {
      const batch = JSON.parse(await readFile(join(out, file), 'utf8')) as NeuronpediaBatch;
      expect(schemaAccepts(batch), `${file}: ${JSON.stringify(schemaValidate.errors)}`).toBe(true);
      sizes.push(batch.features.length);
    }
    expect(sizes).toEqual([128, 128, FIRING - 256]);
    const back = await readNeuronpediaExport(out);
    expect(back.manifest).toEqual(manifest);
    expect(back.features.map((f) => f.index)).toEqual(Array.from({ length: FIRING }, (_, i) => i));
    expect(await leftovers(root)).toEqual([]);
    // Smaller batches when asked.
    const small = await writeNeuronpediaExport(join(root, 'np-small'), docs.slice(0, 10), { modelId: 'm', source: 's', batchSize: 4 });
    expect(small.files).toHaveLength(3);
    expect((await readNeuronpediaExport(join(root, 'np-small'))).batches.map((b) => b.features.length)).toEqual([4, 4, 2]);
  });

  it('a feature round-trips: doc -> export -> read back, fields equal (values to float32)', async () => {
    const out = join(await dirs.make(), 'np');
    await writeNeuronpediaExport(out, docs, { modelId: 'm', source: 's' });
    const back = new Map((await readNeuronpediaExport(out)).features.map((f) => [f.index, f]));
    const f32eq = (a: number[], b: number[]) => expect(a.map(Math.fround)).toEqual(b.map(Math.fround));
    for (const doc of docs.slice(0, FIRING)) {
      const f = back.get(doc.index)!;
      expect(f.index).toBe(doc.index);
      expect(f.density).toBe(doc.frac_nonzero);
      expect(f.explanations).toEqual([]);
      // More than 20 logit effects: the first 20 (the largest) are kept.
      expect(doc.pos_str).toHaveLength(K);
      expect(f.topLogits.map((l) => l.token)).toEqual(doc.pos_str.slice(0, 20));
      f32eq(f.topLogits.map((l) => l.value), doc.pos_values.slice(0, 20));
      expect(f.bottomLogits.map((l) => l.token)).toEqual(doc.neg_str.slice(0, 20));
      f32eq(f.bottomLogits.map((l) => l.value), doc.neg_values.slice(0, 20));
      expect(f.activations).toHaveLength(doc.activations.length);
      const nTop = doc.activations.filter((a) => a.bin === 'top').length;
      expect(nTop).toBe(Math.min(8, doc.count));
      doc.activations.forEach((a, j) => {
        const e = f.activations[j]!;
        expect(e.tokens).toEqual(a.tokens);
        f32eq(e.values, a.values);
        // Each example lies within its bin's bounds (as float32, and as written: the same shortest decimals).
        expect(Math.fround(e.quantileMin)).toBeLessThanOrEqual(Math.fround(a.maxValue));
        expect(Math.fround(e.quantileMax)).toBeGreaterThanOrEqual(Math.fround(a.maxValue));
        expect(e.quantileMin).toBeLessThanOrEqual(Math.max(...e.values));
        if (a.bin === 'top') expect(e.quantileMax).toBeGreaterThanOrEqual(Math.max(...e.values));
        if (a.bin === 'top') {
          expect(Math.fround(e.quantileMax)).toBe(Math.fround(doc.max_act));
          expect(e.quantileFraction).toBeCloseTo(nTop / doc.count, 12);
        } else {
          expect(a.bin).toMatch(/^quantile \d of 5 /);
          expect(e.quantileFraction).toBeCloseTo(0.2, 12);
        }
      });
    }
  });

  it('contexts over 1024 tokens keep a window around the activating token', () => {
    const long = (at: number): FeatureDoc => {
      const n = 3000;
      const values = Array.from({ length: n }, (_, i) => (i === at ? 9 : (i % 7) / 10));
      return {
        ...docs[0]!,
        index: 5,
        activations: [{ tokens: Array.from({ length: n }, (_, i) => `w${i}`), values, tokenIds: Array.from({ length: n }, (_, i) => i), maxValue: 9, maxValueTokenIndex: at, bin: 'top', row: 0 }],
        max_act: 9,
      };
    };
    for (const [at, from] of [[2000, 1488], [10, 0], [2990, 3000 - 1024]] as const) {
      const a = neuronpediaFeature(long(at))!.activations[0]!;
      expect(a.tokens).toHaveLength(1024);
      expect(a.values).toHaveLength(1024);
      expect(a.tokens[0]).toBe(`w${from}`);
      expect(a.tokens).toContain(`w${at}`);
      expect(a.values[at - from]).toBe(9);
      expect(schemaAccepts({ modelId: 'm', source: 's', features: [neuronpediaFeature(long(at))] })).toBe(true);
    }
  });

  it('an export of dead features only has no batch files and counts them', async () => {
    const out = join(await dirs.make(), 'np');
    const dead = docs.slice(FIRING);
    expect(dead.every((d) => d.activations.length === 0 && neuronpediaFeature(d) === undefined)).toBe(true);
    const m = await writeNeuronpediaExport(out, dead, { modelId: 'm', source: 's' });
    expect(m).toMatchObject({ count: 0, skipped: dead.length, files: [] });
    expect((await readNeuronpediaExport(out)).features).toEqual([]);
  });

  it('bad input: a clear error naming the feature (and the schema path), nothing left behind', async () => {
    const root = await dirs.make();
    const out = join(root, 'np');
    const nan = structuredClone(docs[7]!);
    nan.activations[0]!.values[1] = NaN;
    const e = await expectReject(() => writeNeuronpediaExport(out, [docs[3]!, nan], { modelId: 'm', source: 's' }), ValidationError, 'feature 7', '/features/1/activations/0/values/1', 'batch-0000.json');
    expect(e.message).toMatch(/must be number/);
    const short = structuredClone(docs[9]!);
    short.activations[2]!.values.pop();
    await expectReject(() => writeNeuronpediaExport(out, [short], { modelId: 'm', source: 's' }), ValidationError, 'feature 9', 'activations[2]', 'values');
    const badBin = structuredClone(docs[4]!);
    badBin.activations[1]!.bin = 'middling';
    await expectReject(() => writeNeuronpediaExport(out, [badBin], { modelId: 'm', source: 's' }), ValidationError, 'feature 4', '"middling"');
    await expectReject(() => writeNeuronpediaExport(out, [docs[1]!, docs[1]!], { modelId: 'm', source: 's' }), ValidationError, 'feature 1 appears twice');
    // A failing stream of documents.
    const failing = (async function* () {
      yield docs[0]!;
      throw new Error('the corpus went away');
    })();
    await expect(writeNeuronpediaExport(out, failing, { modelId: 'm', source: 's' })).rejects.toThrow('the corpus went away');
    await expectReject(() => writeNeuronpediaExport(out, docs, { modelId: 'gpt2 small', source: 's' }), ValidationError, 'modelId', '"gpt2 small"');
    await expectReject(() => writeNeuronpediaExport(out, docs, { modelId: 'm', source: 's', batchSize: 129 }), ValidationError, 'batchSize', '129');
    expect(existsSync(out)).toBe(false);
    expect(await leftovers(root)).toEqual([]);
    // A non-empty target is refused by name and left as it was.
    const used = join(root, 'used');
    await mkdir(used);
    await writeFile(join(used, 'mine.txt'), 'keep');
    await expectReject(() => writeNeuronpediaExport(used, docs, { modelId: 'm', source: 's' }), ValidationError, used, 'not empty');
    expect(await readdir(used)).toEqual(['mine.txt']);
    // An empty one is used.
    const empty = join(root, 'empty');
    await mkdir(empty);
    await writeNeuronpediaExport(empty, docs.slice(0, 3), { modelId: 'm', source: 's' });
    expect((await readNeuronpediaExport(empty)).features).toHaveLength(3);
    expect(await leftovers(root)).toEqual([]);
  });

  it('readNeuronpediaExport names a broken or tampered file', async () => {
    const out = join(await dirs.make(), 'np');
    await writeNeuronpediaExport(out, docs.slice(0, 5), { modelId: 'm', source: 's' });
    const file = join(out, 'batch-0000.json');
    const batch = JSON.parse(await readFile(file, 'utf8')) as NeuronpediaBatch;
    (batch.features[2] as unknown as Record<string, unknown>).comment = 'hand edit';
    await writeFile(file, JSON.stringify(batch));
    await expectReject(() => readNeuronpediaExport(out), ValidationError, file, `feature ${batch.features[2]!.index}`, '/features/2', 'unknown field "comment"');
    await writeFile(file, '{"modelId":');
    await expectReject(() => readNeuronpediaExport(out), FormatError, file, 'not JSON');
    await expectReject(() => readNeuronpediaExport(join(out, 'nope')), FormatError, 'manifest.json');
  });

  it('default ids: the model folder name and <layer>-saekit', () => {
    expect(defaultNeuronpediaModelId('/tmp/x/Tiny GPT2/')).toBe('tiny-gpt2');
    expect(defaultNeuronpediaModelId('openai-community/gpt2')).toBe('gpt2');
    expect(defaultNeuronpediaSource('blocks.6.hook_resid_pre')).toBe('6-saekit');
    expect(defaultNeuronpediaSource('hook_embed')).toBe('hook_embed-saekit');
  });
});

describe('saekit analyze --neuronpedia', () => {
  let root: string;
  let M: string;
  let SAE: string;
  let corpus: string;
  const D = 64;

  beforeAll(async () => {
    root = await dirs.make();
    M = join(root, 'tiny');
    corpus = join(root, 'corpus.txt');
    await writeFile(corpus, syntheticText(300, seed));
    expect((await runCli('gen-model', '--output', M, '--layers', '2', '--d-model', '32', '--heads', '4', '--seed', String(seed % 1000))).code).toBe(0);
    const acts = join(root, 'acts');
    expect((await runCli('activations', '--model', M, '--hook', 'blocks.1.hook_resid_pre', '--text', corpus, '--tokens', '4096', '--context-size', '32', '--output', acts)).code).toBe(0);
    SAE = join(root, 'sae');
    const r = await runCli('train', '--input', acts, '--output', SAE, '--k', '4', '--d-sae', String(D), '--tokens', '30000', '--batch-size', '256');
    expect(r.code, r.err).toBe(0);
  }, 120_000);

  it('writes a valid export of the dashboard documents; reruns do only what is missing', async () => {
    const dash = join(root, 'dash');
    const np = join(root, 'np');
    const base = ['analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '2048', '--top-n', '6'];
    const args = [...base, '--output', dash];
    const r = await runCli(...args, '--neuronpedia', np);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/neuronpedia: \d+ features \(\d+ dead, skipped\) as tiny\/1-saekit/);
    const { manifest, batches, features } = await readNeuronpediaExport(np);
    expect(manifest).toMatchObject({ modelId: 'tiny', source: '1-saekit' });
    expect(manifest.count + manifest.skipped).toBe(D);
    for (const file of manifest.files) expect(schemaAccepts(JSON.parse(await readFile(join(np, file), 'utf8')))).toBe(true);
    expect(batches.every((b) => b.features.length <= 128)).toBe(true);
    // The same documents as the dashboard's.
    const index = JSON.parse(await readFile(join(dash, 'index.json'), 'utf8')) as DashboardIndex;
    expect(features.map((f) => f.index)).toEqual(index.features.filter((f) => f.frac_nonzero > 0).map((f) => f.id));
    for (const f of features.slice(0, 5)) {
      const doc = JSON.parse(await readFile(join(dash, 'features', `${f.index}.json`), 'utf8')) as FeatureDoc;
      expect(f).toEqual(neuronpediaFeature(doc));
      expect(f.topLogits.map((l) => l.token)).toEqual(doc.pos_str);
    }
    const batchText = await readFile(join(np, manifest.files[0]!), 'utf8');

    // The same command again: both outputs are there, finished: nothing to do.
    const again = await runCli(...args, '--neuronpedia', np);
    expect(again.code, again.err).toBe(0);
    expect(again.err).toContain('already holds this dashboard, finished');
    expect(again.err).toContain('already holds this Neuronpedia export, finished');
    expect(again.err).not.toContain('analysed');
    // The finished dashboard with a new export: only the export is written, the same files.
    const indexText = await readFile(join(dash, 'index.json'), 'utf8');
    const np2 = join(root, 'np2');
    const only = await runCli(...args, '--neuronpedia', np2);
    expect(only.code, only.err).toBe(0);
    expect(only.err).toContain('writing only the Neuronpedia export');
    expect(await readFile(join(dash, 'index.json'), 'utf8')).toBe(indexText);
    expect(await readFile(join(np2, manifest.files[0]!), 'utf8')).toBe(batchText);
    // The finished export with a new dashboard folder: only the dashboard is written.
    const only2 = await runCli(...base, '--output', join(root, 'dash6'), '--neuronpedia', np);
    expect(only2.code, only2.err).toBe(0);
    expect(only2.err).toContain('writing only the dashboard');
    expect(existsSync(join(root, 'dash6', 'index.json'))).toBe(true);
    expect(await readFile(join(np, manifest.files[0]!), 'utf8')).toBe(batchText);
    // Named ids.
    const np3 = join(root, 'np3');
    const named = await runCli(...args, '--neuronpedia', np3, '--neuronpedia-model', 'gpt2-small', '--neuronpedia-source', '1-res-test');
    expect(named.code, named.err).toBe(0);
    expect((await readNeuronpediaExport(np3)).batches.every((b) => b.modelId === 'gpt2-small' && b.source === '1-res-test')).toBe(true);
    // Other flags into a finished export folder, or a folder with other files: refused before the analysis.
    const other = await runCli(...args, '--neuronpedia', np3);
    expect(other.code).toBe(1);
    expect(other.err).toContain(np3);
    expect(other.err).toContain('made by other flags');
    const used = join(root, 'used');
    await mkdir(used);
    await writeFile(join(used, 'mine.txt'), 'keep');
    const u = await runCli('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '256', '--output', join(root, 'dash-u'), '--neuronpedia', used);
    expect(u.code).toBe(1);
    expect(u.err).toContain(used);
    expect(u.err).not.toContain('analysed');
    expect(await readdir(used)).toEqual(['mine.txt']);
    expect(existsSync(join(root, 'dash-u'))).toBe(false);
    // Usage errors.
    expect((await runCli(...args, '--neuronpedia-model', 'x')).code).toBe(2);
    expect((await runCli(...args, '--neuronpedia', join(root, 'np4'), '--neuronpedia-source', 'bad id')).code).toBe(2);
    expect((await runCli(...args, '--neuronpedia', dash)).code).toBe(2);
    expect(await leftovers(root)).toEqual([]);

    // The installed command (bin/saekit.js over dist/), as a process: the same files.
    ensureDist();
    const np5 = join(root, 'np5');
    const p = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'saekit.js'), ...base, '--output', join(root, 'dash5'), '--neuronpedia', np5], {
      encoding: 'utf8',
      env: { ...process.env, SAEKIT_THREADS: '2' },
    });
    expect(p.status, p.stderr).toBe(0);
    expect(p.stderr).toContain('neuronpedia: ');
    expect((await readNeuronpediaExport(np5)).manifest.count).toBe(manifest.count);
    expect(await readFile(join(np5, manifest.files[0]!), 'utf8')).toBe(batchText);
  }, 120_000);
});
