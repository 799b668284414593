// The fuzz targets (issue 17, item 2): every parser saekit points at a user's file or a hub
// answer, each as `run(bytes)` over one input. The contract is the one the property tests in
// test/fuzz.parsers.test.ts check: the input loads, or it is refused with a saekit error whose
// message names the file (or URL). Any other exception, a hang or an outsized allocation is a
// finding. The coverage-guided driver (test/fuzz/run.js) and the corpus replay
// (test/fuzz.corpus.test.ts) both run these. Plain JS over dist/ so the driver needs no
// TypeScript loader: build first (`npm run build`, or the tests' beforeAll does it).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import { SaekitError } from '../../dist/errors.js';
import { NpyReader, SafetensorsReader, parseNpy, readNpz, saveSaeLens, writeNpy, writeNpz, writeSafetensors } from '../../dist/formats/index.js';
import { readSaeDir } from '../../dist/formats/saeDir.js';
import { hubFile, hubListFiles } from '../../dist/hub/hub.js';
import { releases } from '../../dist/hub/registry.js';
import { decodeOnnx, encodeOnnx, findHooks } from '../../dist/model/onnxGraph.js';
import { createSae } from '../../dist/sae.js';
import { decodeFile } from '../../dist/stream/decodeFile.js';
import { encodeFile } from '../../dist/stream/encodeFile.js';
import { syntheticSae } from '../../dist/synthetic.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

/** A finding: the input broke the contract. */
export class FuzzFinding extends Error {
  name = 'FuzzFinding';
}

/** The message of the last refusal (the corpus replay checks the regressions' messages). */
export let lastRefusal = '';

/** Runs FN; an exception other than a SaekitError naming NAME (a string, or a RegExp) is a finding. */
async function loadsOrRefuses(name, fn) {
  lastRefusal = '';
  try {
    await fn();
    return 'loaded';
  } catch (e) {
    if (!(e instanceof SaekitError)) throw new FuzzFinding(`not a saekit error: ${e?.stack ?? String(e)}`);
    if (typeof name === 'string' ? !e.message.includes(name) : !name.test(e.message)) throw new FuzzFinding(`the error does not name ${name}: ${e.message}`);
    lastRefusal = e.message;
    return 'refused';
  }
}

const enc = (s) => new TextEncoder().encode(s);

/** ONNX seeds without their weights: the hook finder reads the graph, and small inputs mutate faster. */
function strippedOnnx(file) {
  const model = decodeOnnx(new Uint8Array(readFileSync(file)), file);
  for (const t of model.graph?.initializer ?? []) {
    t.rawData = new Uint8Array(0);
    t.floatData = [];
    t.int32Data = [];
    t.int64Data = [];
    t.externalData = [];
    t.dataLocation = 0;
  }
  return encodeOnnx(model);
}

/** A small sparsify SAE: cfg.json + sae.safetensors with encoder.weight [d_sae, d_in]. */
async function sparsifySeed(dir, w) {
  mkdirSync(dir, { recursive: true });
  const { dIn, dSae } = w.config;
  const t = new Float32Array(dSae * dIn);
  for (let i = 0; i < dIn; i++) for (let j = 0; j < dSae; j++) t[j * dIn + i] = w.W_enc[i * dSae + j];
  await writeSafetensors(join(dir, 'sae.safetensors'), {
    'encoder.weight': { dtype: 'F32', shape: [dSae, dIn], data: t },
    'encoder.bias': { dtype: 'F32', shape: [dSae], data: w.b_enc },
    W_dec: { dtype: 'F32', shape: [dSae, dIn], data: w.W_dec },
    b_dec: { dtype: 'F32', shape: [dIn], data: w.b_dec },
  });
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ activation: 'topk', k: w.config.k, d_in: dIn, num_latents: dSae, expansion_factor: dSae / dIn, normalize_decoder: true, transcode: false }));
}

/** The hub's answer to one request, spelled in the input as `STATUS\nName: value\n...\n\nbody`. */
function parseAnswer(text) {
  const cut = text.indexOf('\n\n');
  const head = (cut < 0 ? text : text.slice(0, cut)).split('\n');
  const body = cut < 0 ? '' : text.slice(cut + 2);
  const status = Math.trunc(Number(head[0]));
  const headers = new Headers();
  for (const line of head.slice(1)) {
    const at = line.indexOf(':');
    if (at <= 0) continue;
    try {
      headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
    } catch {
      // a header the fetch spec refuses never reaches saekit either
    }
  }
  return { status: status >= 200 && status <= 599 ? status : 200, headers, body };
}

/** Replaces fetch with ANSWERS (one per request, the last repeated) while FN runs. */
async function withHub(answers, fn) {
  const real = globalThis.fetch;
  let n = 0;
  globalThis.fetch = async () => {
    const a = parseAnswer(answers[Math.min(n++, answers.length - 1)]);
    const noBody = a.status === 204 || a.status === 205 || a.status === 304;
    return new Response(noBody ? null : a.body, { status: a.status, headers: a.headers });
  };
  try {
    return await fn();
  } finally {
    globalThis.fetch = real;
  }
}

const ENDPOINT = 'http://hub.invalid';

/**
 * name -> { ext, dict, seeds(work), run(bytes, work) }. WORK is a scratch folder the target
 * owns; seeds come from the project's own writers and the committed real-exporter fixtures.
 */
export const targets = {
  safetensors: {
    dict: ['"dtype"', '"shape"', '"data_offsets"', '"F32"', '"F16"', '"BF16"', '"I64"', '"F64"', '"__metadata__"', '[', ']', '{', '}', ','],
    async seeds(work) {
      const f = join(work, 'seed.safetensors');
      await writeSafetensors(f, {
        a: { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i) },
        b: { dtype: 'F16', shape: [5], data: new Uint16Array(5).fill(0x3c00) },
        c: { dtype: 'I64', shape: [2], data: BigInt64Array.of(1n, 2n) },
      });
      return [readFileSync(f)];
    },
    async run(bytes, work) {
      const file = join(work, 'input.safetensors');
      writeFileSync(file, bytes);
      return loadsOrRefuses('input.safetensors', async () => {
        const r = await SafetensorsReader.open(file);
        try {
          for (const name of r.tensors.keys()) await r.readTensor(name);
        } finally {
          await r.close();
        }
      });
    },
  },

  npy: {
    dict: ["'descr'", "'fortran_order'", "'shape'", "'<f4'", "'>f4'", "'<f2'", "'<f8'", "'|u1'", 'True', 'False', '(', ')', ',', '\x93NUMPY'],
    async seeds(work) {
      const f = join(work, 'seed.npy');
      await writeNpy(f, Float32Array.from({ length: 24 }, (_, i) => i / 3), [6, 4]);
      const fortran = readFileSync(f).toString('latin1').replace("'fortran_order': False", "'fortran_order': True ");
      return [readFileSync(f), Buffer.from(fortran, 'latin1')];
    },
    async run(bytes, work) {
      const file = join(work, 'input.npy');
      writeFileSync(file, bytes);
      return loadsOrRefuses('input.npy', async () => {
        try {
          parseNpy(bytes, file);
        } catch (e) {
          if (!(e instanceof SaekitError) || !e.message.includes('input.npy')) throw e;
        }
        const r = await NpyReader.open(file);
        try {
          await r.readAllFloat32();
          if (r.rows > 2) await r.readRowsFloat32(1, 2);
        } finally {
          await r.close();
        }
      });
    },
  },

  npz: {
    dict: ['PK\x03\x04', 'PK\x01\x02', 'PK\x05\x06', 'PK\x06\x06', 'PK\x06\x07', '.npy', '\x93NUMPY', "'<f4'", "'>f4'", '\x08\x00', '\x00\x00'],
    async seeds(work) {
      const stored = join(work, 'stored.npz');
      const arrays = { W: { shape: [4, 3], data: Float32Array.from({ length: 12 }, (_, i) => i) }, b: { shape: [3], data: Float32Array.of(1, 2, 3) } };
      await writeNpz(stored, arrays);
      // np.savez_compressed's layout: the same members, deflated.
      const members = Object.fromEntries(Object.entries(unzipSync(readFileSync(stored))).map(([n, b]) => [n, [b, { level: 6 }]]));
      return [readFileSync(stored), zipSync(members)];
    },
    async run(bytes, work) {
      const file = join(work, 'input.npz');
      writeFileSync(file, bytes);
      return loadsOrRefuses('input.npz', () => readNpz(file));
    },
  },

  'saelens-cfg': {
    dict: ['"architecture"', '"topk"', '"jumprelu"', '"standard"', '"d_in"', '"d_sae"', '"k"', '"dtype"', '"float16"', '"normalize_activations"', '"apply_b_dec_to_input"', '"hook_name"', '"activation_fn_kwargs"', 'null', 'true', '-1', '1e309'],
    async seeds(work) {
      const base = join(work, 'saelens-base');
      await saveSaeLens(base, syntheticSae({ dIn: 8, dSae: 16, architecture: 'topk', k: 3, seed: 2 }));
      const jump = join(work, 'saelens-jump');
      await saveSaeLens(jump, syntheticSae({ dIn: 8, dSae: 16, architecture: 'jumprelu', seed: 3 }));
      return [readFileSync(join(base, 'cfg.json')), readFileSync(join(jump, 'cfg.json'))];
    },
    async run(bytes, work) {
      // The weights stay valid (a jumprelu SAE's: a topk cfg ignores the threshold); the
      // cfg.json is the input.
      const dir = join(work, 'saelens');
      const base = join(work, 'saelens-jump');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'sae_weights.safetensors'), readFileSync(join(base, 'sae_weights.safetensors')));
      writeFileSync(join(dir, 'cfg.json'), bytes);
      return loadsOrRefuses('saelens', () => readSaeDir(dir));
    },
  },

  'sparsify-cfg': {
    dict: ['"activation"', '"topk"', '"k"', '"d_in"', '"num_latents"', '"expansion_factor"', '"transcode"', '"skip_connection"', 'true', 'false', '0', '-1'],
    async seeds(work) {
      await sparsifySeed(join(work, 'sparsify-base'), syntheticSae({ dIn: 8, dSae: 16, architecture: 'topk', k: 3, seed: 4 }));
      return [readFileSync(join(work, 'sparsify-base', 'cfg.json'))];
    },
    async run(bytes, work) {
      const dir = join(work, 'sparsify', 'layers.3');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'sae.safetensors'), readFileSync(join(work, 'sparsify-base', 'sae.safetensors')));
      writeFileSync(join(dir, 'cfg.json'), bytes);
      return loadsOrRefuses('layers.3', () => readSaeDir(join(work, 'sparsify')));
    },
  },

  'gemma-scope-params': {
    dict: ['W_enc.npy', 'W_dec.npy', 'b_enc.npy', 'b_dec.npy', 'threshold.npy', 'w_enc', 'PK\x03\x04', 'PK\x01\x02', 'PK\x05\x06', "'<f4'", "'>f4'", "'<f2'"],
    async seeds(work) {
      const w = syntheticSae({ dIn: 6, dSae: 10, architecture: 'jumprelu', seed: 5 });
      const f = join(work, 'params.npz');
      await writeNpz(f, {
        W_enc: { shape: [6, 10], data: w.W_enc },
        W_dec: { shape: [10, 6], data: w.W_dec },
        b_enc: { shape: [10], data: w.b_enc },
        b_dec: { shape: [6], data: w.b_dec },
        threshold: { shape: [10], data: w.threshold },
      });
      return [readFileSync(f)];
    },
    async run(bytes, work) {
      const dir = join(work, 'gemma-scope');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'params.npz'), bytes);
      return loadsOrRefuses('params.npz', () => readSaeDir(dir));
    },
  },

  'gemma-scope2-params': {
    dict: ['"w_enc"', '"w_dec"', '"b_enc"', '"b_dec"', '"threshold"', '"affine_skip_connection"', '"dtype"', '"shape"', '"data_offsets"', '"F32"', '"BF16"'],
    async seeds(work) {
      const f = join(work, 'gs2.safetensors');
      const n = (k) => Float32Array.from({ length: k }, (_, i) => Math.sin(i + k) / 2);
      await writeSafetensors(f, {
        w_enc: { dtype: 'F32', shape: [6, 10], data: n(60) },
        w_dec: { dtype: 'F32', shape: [10, 4], data: n(40) },
        b_enc: { dtype: 'F32', shape: [10], data: n(10) },
        b_dec: { dtype: 'F32', shape: [4], data: n(4) },
        threshold: { dtype: 'F32', shape: [10], data: n(10).map(Math.abs) },
        affine_skip_connection: { dtype: 'BF16', shape: [6, 4], data: new Uint16Array(24).fill(0x3e80) },
      });
      return [readFileSync(f)];
    },
    async run(bytes, work) {
      const dir = join(work, 'gs2', 'transcoder', 'layer_2_width_16k_l0_small');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'params.safetensors'), bytes);
      return loadsOrRefuses('params.safetensors', () => readSaeDir(dir));
    },
  },

  registry: {
    dict: ['"repo_id"', '"model"', '"format"', '"saelens"', '"sparsify"', '"gemma-scope"', '"architecture"', '"d_in"', '"saes"', '"id"', '"path"', '"hook_name"', '"neuronpedia"', 'null', '[]', '{}'],
    async seeds() {
      const entry = { 'my-release': { repo_id: 'me/saes', model: 'gpt2-small', format: 'saelens', architecture: 'topk', d_in: 768, saes: [{ id: 'a', path: 'a', hook_name: 'blocks.0.hook_resid_pre' }] } };
      return [enc(JSON.stringify(entry, null, 1))];
    },
    async run(bytes, work) {
      const file = join(work, 'releases.json');
      writeFileSync(file, bytes);
      return loadsOrRefuses('releases.json', async () => releases(file));
    },
  },

  codes: {
    dict: ['"indptr"', '"indices"', '"values"', '"I64"', '"I32"', '"F32"', '"F16"', '"shape"', '"data_offsets"', '"__metadata__"', '"d_sae"'],
    async seeds(work) {
      const w = syntheticSae({ dIn: 8, dSae: 16, architecture: 'topk', k: 5, seed: 3 });
      const sae = await createSae(w, { device: 'cpu' });
      try {
        const acts = join(work, 'acts.npy');
        await writeNpy(acts, Float32Array.from({ length: 40 }, (_, i) => Math.sin(i)), [5, 8]);
        const codes = join(work, 'seed-codes.safetensors');
        await encodeFile(sae, acts, codes);
        return [readFileSync(codes)];
      } finally {
        sae.dispose();
      }
    },
    async run(bytes, work) {
      const file = join(work, 'codes.safetensors');
      writeFileSync(file, bytes);
      const out = join(work, 'decoded.npy');
      rmSync(out, { force: true });
      this.sae ??= await createSae(syntheticSae({ dIn: 8, dSae: 16, architecture: 'topk', k: 5, seed: 3 }), { device: 'cpu' });
      return loadsOrRefuses('codes.safetensors', () => decodeFile(this.sae, file, out));
    },
  },

  onnx: {
    dict: ['LayerNormalization', 'SimplifiedLayerNormalization', 'SkipLayerNormalization', 'Add', 'MatMul', 'Gather', 'input_ids', 'logits', '/transformer/h.0/ln_1/', 'model.layers.0', 'pkg.torch.onnx'],
    async seeds() {
      return ['llama/onnx/model.onnx', 'gpt2/onnx/model_dynamo.onnx', 'qwen2/onnx/model_optimized.onnx', 'pythia/onnx/model.onnx'].map((f) => strippedOnnx(join(FIXTURES, 'hf', f)));
    },
    async run(bytes) {
      return loadsOrRefuses('input.onnx', async () => findHooks(decodeOnnx(bytes, 'input.onnx'), 'input.onnx'));
    },
  },

  'hub-answers': {
    dict: ['X-Repo-Commit: ', 'X-Linked-Etag: ', 'X-Linked-Size: ', 'ETag: ', 'Content-Length: ', 'Location: ', 'Link: <', '>; rel="next"', '\n\n', '302', '307', '404', '"type"', '"directory"', '"file"', '"path"', '"size"'],
    async seeds() {
      const commit = 'a'.repeat(40);
      const sha = createHash('sha256').update('hello').digest('hex');
      return [
        // a tree listing in two pages, then a file: HEAD (LFS redirect) and the download
        `200\nLink: <${ENDPOINT}/api/models/me/saes/tree/main/a?cursor=2>; rel="next"\n\n[{"type":"file","path":"a/cfg.json","size":12},{"type":"directory","path":"a/b"}]`,
        '200\n\n[{"type":"file","path":"a/sae_weights.safetensors","size":5}]',
        `302\nX-Repo-Commit: ${commit}\nX-Linked-Etag: "${sha}"\nX-Linked-Size: 5\nLocation: ${ENDPOINT}/blob\n\n`,
        '200\nContent-Length: 5\n\nhello',
      ].map((s) => enc(s));
    },
    // One input holds every answer, split at \x00 (the seeds above are joined so).
    joinSeeds: (seeds) => [Buffer.concat(seeds.flatMap((s, i) => (i === 0 ? [s] : [Buffer.from([0]), s])))],
    async run(bytes, work) {
      const answers = Buffer.from(bytes).toString('utf8').split('\x00');
      const cacheDir = join(work, 'hub-cache');
      rmSync(cacheDir, { recursive: true, force: true });
      // The error names the URL it was answering (a Link or Location header may have sent it
      // anywhere) or the repository.
      return loadsOrRefuses(/[a-z]+:\/\/|me\/saes/, () =>
        withHub(answers, async () => {
          const o = { endpoint: ENDPOINT, cacheDir, offline: false, token: '', lockStaleMs: 1000 };
          const list = await hubListFiles('me/saes', 'a', o);
          for (const e of list) if (typeof e.path !== 'string' || typeof e.size !== 'number') throw new FuzzFinding(`a malformed listing entry came back: ${JSON.stringify(e)}`);
          await hubFile('me/saes', 'a/cfg.json', o);
        }),
      );
    },
  },
};

/** The seeds of TARGET as the driver and the replay use them. */
export async function seedsOf(name, work) {
  const t = targets[name];
  const seeds = await t.seeds(work);
  return t.joinSeeds ? t.joinSeeds(seeds) : seeds;
}

/** Inputs the driver grew coverage with (replayed by every `npm test`). */
export const corpusDir = (name) => join(import.meta.dirname, 'corpus', name);
/** Inputs that once broke the contract, named for what they do. */
export const regressionsDir = (name) => join(import.meta.dirname, 'regressions', name);
