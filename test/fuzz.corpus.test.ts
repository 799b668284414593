// The fuzz corpus, replayed (issue 17, item 2): every input the coverage-guided driver
// (test/fuzz/run.js) kept because it reached new code, and every input that once broke the
// contract (test/fuzz/regressions, named for what they do), runs through its target on each
// `npm test`: it loads, or is refused with a saekit error naming the file. The regressions
// also pin the refusal each fix gives.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDist } from './helpers/dist.js';

type Targets = typeof import('./fuzz/targets.js');
let t: Targets;
let work: string;
const replayed: Record<string, number> = {};

beforeAll(async () => {
  ensureDist();
  t = await import('./fuzz/targets.js');
  work = mkdtempSync(join(tmpdir(), 'saekit-fuzz-replay-'));
}, 120_000);
afterAll(() => {
  for (const target of Object.values(t?.targets ?? {})) target.sae?.dispose();
  if (work) rmSync(work, { recursive: true, force: true });
  console.log('fuzz.corpus: inputs replayed per target:', JSON.stringify(replayed));
});

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);

/** What each regression input must now give: loaded, or a refusal containing the text. */
const EXPECTED: Record<string, Record<string, string>> = {
  npy: {
    'fortran-zero-rows-huge-dim.npy': 'too large', // was a RangeError building the Fortran index of 2^53 columns
    'dim-past-2e53.npy': 'too large',
  },
  'hub-answers': {
    'tree-page-not-json': 'tree listing is not JSON', // was a SyntaxError from res.json()
    'tree-entry-without-path': 'malformed entry', // was an entry with path undefined, returned
    'tree-entry-size-past-2e53': 'malformed entry',
    'link-malformed-url': 'malformed Link header', // was a TypeError: Invalid URL
    'link-to-itself': 'link back to one already read', // was 10,000 requests, then a silently cut listing
    'link-endless-relative-pages': 'past 1000 pages', // was 10,000 requests (a 20 s hang in the fuzzer)
    'location-not-http': 'malformed Location header', // was a download from a non-http URL
    'empty-file': 'loaded', // was ENOENT: a zero-byte file never got its partial file
  },
};

describe('fuzz corpus replay', () => {
  it('the expected table names only committed regression files', async () => {
    for (const [name, cases] of Object.entries(EXPECTED)) expect(files(t.regressionsDir(name)).sort()).toEqual(Object.keys(cases).sort());
  });

  it.each(['safetensors', 'npy', 'npz', 'saelens-cfg', 'sparsify-cfg', 'gemma-scope-params', 'gemma-scope2-params', 'registry', 'codes', 'onnx', 'hub-answers'])(
    '%s: seeds, corpus and regressions load or are refused by name',
    async (name) => {
      const target = t.targets[name]!;
      expect(target, `target ${name}`).toBeDefined();
      const inputs: [string, Uint8Array][] = [
        ...(await t.seedsOf(name, work)).map((b, i): [string, Uint8Array] => [`seed ${i}`, b]),
        ...files(t.corpusDir(name)).map((f): [string, Uint8Array] => [`corpus/${name}/${f}`, readFileSync(join(t.corpusDir(name), f))]),
      ];
      for (const [label, bytes] of inputs) {
        await expect(target.run(bytes, work), label).resolves.toMatch(/^(loaded|refused)$/);
      }
      // The seeds are valid files: each loads.
      for (const [label, bytes] of inputs.filter(([l]) => l.startsWith('seed'))) expect(await target.run(bytes, work), label).toBe('loaded');
      for (const f of files(t.regressionsDir(name))) {
        const outcome = await target.run(readFileSync(join(t.regressionsDir(name), f)), work);
        const want = EXPECTED[name]?.[f];
        if (want === 'loaded') expect(outcome, f).toBe('loaded');
        else {
          expect(outcome, f).toBe('refused');
          expect(t.lastRefusal, f).toContain(want);
        }
      }
      replayed[name] = inputs.length + files(t.regressionsDir(name)).length;
    },
    120_000,
  );
});
