// Property tests of every file parser (issue 17, item 2): valid files are mutated (truncated,
// bytes flipped, 4-byte fields overwritten with huge / zero / negative lengths, bytes inserted;
// JSON configs with values replaced by negative, huge, wrong-typed ones or keys deleted) and
// each parser must either load or throw a saekit error that names the file: never another
// exception (TypeError, RangeError, an out-of-memory from a length it trusted), never a hang.
// Seeds and run counts are fixed per target (replay with SAEKIT_FUZZ_SEED; more runs with
// SAEKIT_FUZZ_RUNS).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SaekitError } from '../src/errors.js';
import { NpyReader, SafetensorsReader, parseNpy, readNpz, saveSaeLens, writeNpy, writeNpz, writeSafetensors } from '../src/formats/index.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import { releases } from '../src/hub/registry.js';
import { decodeOnnx, findHooks } from '../src/model/onnxGraph.js';
import { createSae } from '../src/sae.js';
import { decodeFile } from '../src/stream/decodeFile.js';
import { encodeFile } from '../src/stream/encodeFile.js';
import { randomWeights } from './helpers/formatsFixtures.js';

const RUNS = Number(process.env.SAEKIT_FUZZ_RUNS ?? 150);
const SEED = Number(process.env.SAEKIT_FUZZ_SEED ?? 20261207);
let dir: string;
let counter = 0;
const tried: Record<string, { runs: number; loaded: number; refused: number }> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'saekit-fuzz-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  console.log('fuzz.parsers: runs per target (loaded / refused with a saekit error):', JSON.stringify(tried));
});

type Mutation =
  | { kind: 'truncate'; at: number }
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'u32'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: number[] };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }).map((m) => m as Mutation),
  fc.record({ kind: fc.constant('flip' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), mask: fc.integer({ min: 1, max: 255 }) }).map((m) => m as Mutation),
  fc
    .record({
      kind: fc.constant('u32' as const),
      at: fc.double({ min: 0, max: 1, noNaN: true }),
      value: fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 0x10000, 0xfffffff0),
    })
    .map((m) => m as Mutation),
  fc.record({ kind: fc.constant('insert' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 9 }) }).map((m) => m as Mutation),
);

/** Applies the mutations; positions are fractions of the length, biased to the header (first 256 bytes) half the time. */
function mutate(bytes: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = bytes.slice();
  for (const m of ms) {
    const span = m.at < 0.5 ? Math.min(b.length, 256) : b.length;
    const at = Math.min(b.length - 1, Math.floor((m.at < 0.5 ? m.at * 2 : (m.at - 0.5) * 2) * span));
    if (b.length === 0) break;
    if (m.kind === 'truncate') b = b.subarray(0, at);
    else if (m.kind === 'flip') b[at] = b[at]! ^ m.mask;
    else if (m.kind === 'u32') {
      if (at + 4 <= b.length) new DataView(b.buffer, b.byteOffset).setUint32(at, m.value, true);
    } else {
      const out = new Uint8Array(b.length + m.bytes.length);
      out.set(b.subarray(0, at), 0);
      out.set(m.bytes, at);
      out.set(b.subarray(at), at + m.bytes.length);
      b = out;
    }
  }
  return b;
}

/** Runs fn on a mutated copy written to FILE: it loads, or throws a SaekitError naming the file. */
async function expectLoadsOrRefuses(target: string, file: string, fn: () => Promise<unknown>): Promise<void> {
  const t = (tried[target] ??= { runs: 0, loaded: 0, refused: 0 });
  t.runs++;
  try {
    await fn();
    t.loaded++;
  } catch (e) {
    if (!(e instanceof SaekitError)) throw new Error(`${target}: ${file}: not a saekit error: ${(e as Error)?.stack ?? String(e)}`);
    expect((e as Error).message, `${target}: the error names the file`).toContain(file.split('/').pop()!.replace(/\.tmp$/, ''));
    t.refused++;
  }
}

async function fuzzBytes(target: string, name: string, valid: Uint8Array, load: (file: string, bytes: Uint8Array) => Promise<unknown>, runs = RUNS): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (ms) => {
      const bytes = mutate(valid, ms);
      const file = join(dir, `${counter++}-${name}`);
      await writeFile(file, bytes);
      await expectLoadsOrRefuses(target, file, () => load(file, bytes));
    }),
    { numRuns: runs, seed: SEED, endOnFailure: true },
  );
}

const jsonValue = fc.oneof(
  fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53, 0.5, 'x', '', null, true, [], {}, [1, 2], '1e9', 'NaN'),
  fc.integer({ min: -5, max: 100000 }),
);

/** Replaces or deletes values at random key paths of a JSON object. */
function mutateJson(obj: unknown, edits: { path: number[]; value: unknown; del: boolean }[]): unknown {
  const root = structuredClone(obj) as Record<string, unknown>;
  for (const e of edits) {
    let node: Record<string, unknown> = root;
    for (let depth = 0; depth < e.path.length; depth++) {
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      const key = keys[e.path[depth]! % keys.length]!;
      const child = node[key];
      if (depth === e.path.length - 1 || child === null || typeof child !== 'object') {
        if (e.del) delete node[key];
        else node[key] = e.value;
        break;
      }
      node = child as Record<string, unknown>;
    }
  }
  return root;
}

const jsonEdits = fc.array(fc.record({ path: fc.array(fc.nat(50), { minLength: 1, maxLength: 4 }), value: jsonValue, del: fc.boolean() }), { minLength: 1, maxLength: 4 });

describe('fuzzed parsers: load or a saekit error naming the file', () => {
  it('safetensors (header JSON, offsets, dtypes)', async () => {
    const valid = join(dir, 'valid.safetensors');
    await writeSafetensors(valid, {
      a: { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i) },
      b: { dtype: 'F16', shape: [5], data: new Uint16Array(5).fill(0x3c00) },
      c: { dtype: 'I64', shape: [2], data: BigInt64Array.of(1n, 2n) },
    });
    await fuzzBytes('safetensors', 'x.safetensors', new Uint8Array(await readFile(valid)), async (file) => {
      const r = await SafetensorsReader.open(file);
      try {
        for (const name of r.tensors.keys()) await r.readTensor(name);
      } finally {
        await r.close();
      }
    });
  });

  it('.npy headers and data (streamed and in memory)', async () => {
    const valid = join(dir, 'valid.npy');
    await writeNpy(valid, Float32Array.from({ length: 24 }, (_, i) => i / 3), [6, 4]);
    await fuzzBytes('npy', 'x.npy', new Uint8Array(await readFile(valid)), async (file, bytes) => {
      try {
        parseNpy(bytes, file);
      } catch (e) {
        if (!(e instanceof SaekitError)) throw e;
      }
      const r = await NpyReader.open(file);
      try {
        await r.readAllFloat32();
        if (r.rows > 2) await r.readRowsFloat32(1, 2);
      } finally {
        await r.close();
      }
    });
  });

  it('.npz (central directory, local headers, stored and deflated members)', async () => {
    const valid = join(dir, 'valid.npz');
    await writeNpz(valid, { W: { shape: [4, 3], data: Float32Array.from({ length: 12 }, (_, i) => i) }, b: { shape: [3], data: Float32Array.of(1, 2, 3) } });
    await fuzzBytes('npz', 'x.npz', new Uint8Array(await readFile(valid)), (file) => readNpz(file));
  });

  it('SAELens cfg.json and weights (the SAE directory reader)', async () => {
    const base = join(dir, 'sae-valid');
    const w = randomWeights('topk', 8, 16, 3, 2);
    await saveSaeLens(base, w);
    const cfg = JSON.parse(await readFile(join(base, 'cfg.json'), 'utf8')) as unknown;
    const weights = new Uint8Array(await readFile(join(base, 'sae_weights.safetensors')));
    await fc.assert(
      fc.asyncProperty(jsonEdits, fc.array(mutation, { maxLength: 2 }), async (edits, ms) => {
        const d = join(dir, `sae-${counter++}`);
        await saveSaeLens(d, w);
        await writeFile(join(d, 'cfg.json'), JSON.stringify(mutateJson(cfg, edits)));
        if (ms.length > 0) await writeFile(join(d, 'sae_weights.safetensors'), mutate(weights, ms));
        await expectLoadsOrRefuses('sae-dir', d, () => readSaeDir(d));
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
  });

  it('the release registry file', async () => {
    const entry = { 'my-release': { repo_id: 'me/saes', model: 'gpt2-small', format: 'saelens', architecture: 'topk', d_in: 768, saes: [{ id: 'a', path: 'a', hook_name: 'blocks.0.hook_resid_pre' }] } };
    await fc.assert(
      fc.asyncProperty(jsonEdits, async (edits) => {
        const file = join(dir, `releases-${counter++}.json`);
        await writeFile(file, JSON.stringify(mutateJson(entry, edits)));
        await expectLoadsOrRefuses('registry', file, async () => releases(file));
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    await fuzzBytes('registry-bytes', 'x.json', new TextEncoder().encode(JSON.stringify(entry)), async (file) => releases(file));
  });

  it('codes files handed to decode (indptr, indices, values: an index >= d_sae never reaches a gather)', async () => {
    const w = randomWeights('topk', 8, 16, 5, 3);
    const sae = await createSae(w, { device: 'cpu' });
    try {
      const acts = join(dir, 'acts.npy');
      await writeNpy(acts, Float32Array.from({ length: 40 }, (_, i) => Math.sin(i)), [5, 8]);
      const codes = join(dir, 'codes.safetensors');
      await encodeFile(sae, acts, codes);
      await fuzzBytes('codes', 'x.safetensors', new Uint8Array(await readFile(codes)), (file) => decodeFile(sae, file, join(dir, `out-${counter++}.npy`)), Math.ceil(RUNS / 2));
    } finally {
      sae.dispose();
    }
  });

  it('ONNX protobufs handed to the hook finder', async () => {
    const fixture = join(import.meta.dirname, 'fixtures', 'hf', 'llama', 'onnx', 'model.onnx');
    const valid = new Uint8Array(await readFile(fixture));
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (ms) => {
        const bytes = mutate(valid, ms);
        const file = `fuzz-${counter++}.onnx`;
        await expectLoadsOrRefuses('onnx', file, async () => findHooks(decodeOnnx(bytes, file), file));
      }),
      { numRuns: Math.ceil(RUNS / 3), seed: SEED, endOnFailure: true },
    );
  });
});
