#!/usr/bin/env node
// Coverage-guided fuzzing of saekit's parsers (issue 17, item 2).
//
//   node test/fuzz/run.js [--seconds 20] [--jobs 2] [--save] [--runs N] [TARGET ...]
//   node test/fuzz/run.js --merge [TARGET ...]   shrink the committed corpus
//
// Feedback is V8's own block coverage (the inspector's precise coverage with call counts,
// taken after every input): an input that reaches a block of saekit's code (dist/), fflate or
// protobufjs not reached before, or reaches one a new number of times (counts bucketed 1, 2,
// 3, 4-7, 8-15, ... as AFL does), joins the corpus and is mutated further. Mutations are
// libFuzzer's usual kinds: bit flips, interesting bytes and integers, erased / inserted /
// copied ranges, crossover with another corpus entry, the target's dictionary tokens, and
// numbers in text replaced by edge cases.
//
// Why not @jazzer.js/core: its only release with prebuilt binaries (4.0.0) needs glibc 2.38
// and GLIBCXX_3.4.32; this Debian 12 image (CI's too) has glibc 2.36 and GCC 12's libstdc++,
// and older releases fetch their binaries from GitHub, which CI cannot reach. The contract,
// the targets and the committed corpus are the same either way.
//
// Each target runs in its own child process (so a hang, a native crash or an out-of-memory
// is caught by the parent, which keeps the input that caused it) for --seconds. Findings are
// written to fuzz-findings/<target>-<sha1>.bin with the error; the exit code is 1 if any.
// --save adds the inputs that grew coverage to test/fuzz/corpus/<target>/ (commit them: the
// corpus replay in test/fuzz.corpus.test.ts then runs them on every `npm test`). --merge
// replays a target's corpus smallest first and deletes the entries that add no coverage the
// seeds and smaller entries did not already give (libFuzzer's -merge=1).
import { fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = join(import.meta.dirname, '..', '..');
const FINDINGS = join(ROOT, 'fuzz-findings');
const HANG_MS = 20_000; // no input finished for this long: the child is stuck
const SLOW_MS = 5_000; // one input that took this long is reported as a hang
const RSS_LIMIT_MIB = 1536; // peak RSS above this: an allocation the input did not justify
const MAX_LEN = 1 << 16;

function parseArgs(argv) {
  const o = { seconds: 20, jobs: Math.min(2, availableParallelism()), save: false, merge: false, runs: Infinity, child: undefined, names: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds') o.seconds = Number(argv[++i]);
    else if (a === '--jobs') o.jobs = Number(argv[++i]);
    else if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--save') o.save = true;
    else if (a === '--merge') o.merge = true;
    else if (a === '--child') o.child = argv[++i];
    else if (a.startsWith('--')) throw new Error(`unknown flag ${a} (flags: --seconds S, --jobs N, --runs N, --save, --merge)`);
    else o.names.push(a);
  }
  if (!(o.seconds > 0) || !(o.jobs >= 1)) throw new Error('--seconds and --jobs take positive numbers');
  return o;
}

// ---- the mutator -------------------------------------------------------------------------

/** xorshift32: runs are reproducible from the seed the child prints. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  return { u32: next, below: (n) => (n <= 0 ? 0 : next() % n), chance: (p) => next() / 2 ** 32 < p };
}

const BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x27, 0x2c, 0x2d, 0x2e, 0x30, 0x31, 0x39, 0x3a, 0x5b, 0x5d, 0x7b, 0x7d, 0x0a];
const INTS = [0, 1, 2, 16, 255, 256, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xffffffff];
const NUMBERS = ['-1', '0', '1', '-0', '1e309', '-1e309', '9007199254740993', '4294967296', '2147483648', 'NaN', '0.5', '99999999999', '1e-320'];

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One random mutation of B (a copy); OTHER is another corpus entry for crossover. */
function mutateOnce(b, r, dict, other) {
  const n = b.length;
  const at = (extra = 0) => r.below(n + extra);
  switch (r.below(12)) {
    case 0: {
      if (n === 0) return b;
      const c = b.slice();
      c[at()] ^= 1 << r.below(8);
      return c;
    }
    case 1: {
      if (n === 0) return b;
      const c = b.slice();
      c[at()] = r.chance(0.5) ? BYTES[r.below(BYTES.length)] : r.below(256);
      return c;
    }
    case 2: {
      // an interesting integer, 2, 4 or 8 bytes, either endianness
      const width = [2, 4, 8][r.below(3)];
      if (n < width) return b;
      const c = b.slice();
      const v = INTS[r.below(INTS.length)];
      const p = r.below(n - width + 1);
      const dv = new DataView(c.buffer);
      const little = r.chance(0.8);
      if (width === 2) dv.setUint16(p, v & 0xffff, little);
      else if (width === 4) dv.setUint32(p, v >>> 0, little);
      else dv.setBigUint64(p, r.chance(0.5) ? BigInt(v) : BigInt(v) << 32n, little);
      return c;
    }
    case 3: {
      if (n === 0) return b;
      const p = at();
      const len = 1 + r.below(r.chance(0.8) ? 16 : Math.max(1, n >> 2));
      return concat(b.subarray(0, p), b.subarray(Math.min(n, p + len)));
    }
    case 4: {
      const p = at(1);
      const ins = Uint8Array.from({ length: 1 + r.below(8) }, () => (r.chance(0.5) ? BYTES[r.below(BYTES.length)] : r.below(256)));
      return concat(b.subarray(0, p), ins, b.subarray(p));
    }
    case 5: {
      // a range of the input copied elsewhere, inserted or over the top
      if (n === 0) return b;
      const from = at();
      const len = 1 + r.below(Math.min(64, n - from));
      const piece = b.slice(from, from + len);
      const to = at(1);
      if (r.chance(0.5)) return concat(b.subarray(0, to), piece, b.subarray(to));
      const c = b.slice();
      c.set(piece.subarray(0, Math.max(0, n - to)), Math.min(to, n));
      return c;
    }
    case 6: {
      // crossover: a prefix of this, a suffix of the other
      if (!other) return b;
      return concat(b.subarray(0, at(1)), other.subarray(r.below(other.length + 1)));
    }
    case 7: {
      if (!other || other.length === 0) return b;
      const from = r.below(other.length);
      const piece = other.subarray(from, from + 1 + r.below(64));
      const to = at(1);
      return concat(b.subarray(0, to), piece, b.subarray(to));
    }
    case 8:
    case 9: {
      if (dict.length === 0) return b;
      const token = dict[r.below(dict.length)];
      const p = at(1);
      if (r.chance(0.5)) return concat(b.subarray(0, p), token, b.subarray(p));
      return concat(b.subarray(0, p), token, b.subarray(Math.min(n, p + token.length)));
    }
    case 10: {
      // a number written as text replaced by an edge case
      const text = Buffer.from(b).toString('latin1');
      const runs = [...text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
      if (runs.length === 0) return b;
      const m = runs[r.below(runs.length)];
      const num = Buffer.from(NUMBERS[r.below(NUMBERS.length)], 'latin1');
      return concat(b.subarray(0, m.index), num, b.subarray(m.index + m[0].length));
    }
    default:
      return b.subarray(0, at());
  }
}

function mutate(b, r, dict, other) {
  let c = b;
  const count = 1 << r.below(3);
  for (let i = 0; i < count; i++) c = mutateOnce(c, r, dict, other);
  return c.length > MAX_LEN ? c.subarray(0, MAX_LEN) : c;
}

// ---- coverage ----------------------------------------------------------------------------

function bucket(count) {
  if (count <= 3) return count;
  return 2 + Math.floor(Math.log2(count)); // 4-7 -> 4, 8-15 -> 5, ...
}

class Coverage {
  constructor(session) {
    this.session = session;
    this.seen = new Set();
    this.watched = new Map(); // scriptId -> whether it is code we want feedback from
    this.roots = [pathToFileURL(join(ROOT, 'dist')).href, pathToFileURL(join(ROOT, 'node_modules', 'fflate')).href, pathToFileURL(join(ROOT, 'node_modules', 'protobufjs')).href];
  }
  static async start() {
    const s = new Session();
    s.connect();
    await s.post('Profiler.enable');
    await s.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
    return new Coverage(s);
  }
  /** The new features since the last call (taking coverage resets the counters). */
  async take() {
    const { result } = await this.session.post('Profiler.takePreciseCoverage');
    let fresh = 0;
    for (const script of result) {
      let watch = this.watched.get(script.scriptId);
      if (watch === undefined) {
        watch = this.roots.some((r) => script.url.startsWith(r));
        this.watched.set(script.scriptId, watch);
      }
      if (!watch) continue;
      for (const f of script.functions) {
        for (const range of f.ranges) {
          if (range.count === 0) continue;
          const key = `${script.scriptId}:${range.startOffset}:${range.endOffset}:${bucket(range.count)}`;
          if (!this.seen.has(key)) {
            this.seen.add(key);
            fresh++;
          }
        }
      }
    }
    return fresh;
  }
}

// ---- one target, in a child process ------------------------------------------------------

const sha1 = (b) => createHash('sha1').update(b).digest('hex').slice(0, 16);

async function child(name, o) {
  for (const v of ['HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_TOKEN', 'HF_ENDPOINT']) delete process.env[v];
  const { targets, seedsOf, corpusDir, regressionsDir, FuzzFinding } = await import('./targets.js');
  const target = targets[name];
  if (!target) throw new Error(`no fuzz target '${name}' (targets: ${Object.keys(targets).join(', ')})`);
  const work = mkdtempSync(join(tmpdir(), `saekit-fuzz-${name}-`));
  const current = join(work, 'current.bin');
  process.send?.({ current });
  const dict = (target.dict ?? []).map((t) => Buffer.from(t, 'latin1'));
  const seed = Number(process.env.SAEKIT_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const r = rng(seed);
  const cov = await Coverage.start();
  const stats = { target: name, seed, execs: 0, loaded: 0, refused: 0, corpus: 0, saved: 0, features: 0, findings: 0 };

  const runOne = async (input) => {
    writeFileSync(current, input); // the parent keeps this if the process dies or hangs
    const t0 = performance.now();
    let outcome;
    try {
      outcome = await target.run(input, work);
    } catch (e) {
      const why = e instanceof FuzzFinding ? e.message : `the target itself failed: ${e?.stack ?? e}`;
      return { finding: why };
    }
    const ms = performance.now() - t0;
    stats.execs++;
    stats[outcome]++;
    process.send?.({ beat: stats.execs });
    if (ms > SLOW_MS) return { finding: `one input took ${Math.round(ms)} ms (a hang)` };
    const rssMiB = process.resourceUsage().maxRSS / 1024;
    if (rssMiB > RSS_LIMIT_MIB) return { finding: `peak RSS reached ${Math.round(rssMiB)} MiB on a ${input.length}-byte input` };
    return { fresh: await cov.take() };
  };
  const report = (input, why) => {
    mkdirSync(FINDINGS, { recursive: true });
    const f = join(FINDINGS, `${name}-${sha1(input)}.bin`);
    writeFileSync(f, input);
    writeFileSync(`${f}.txt`, `${why}\n`);
    stats.findings++;
    console.error(`fuzz ${name}: FINDING (${f}): ${why.split('\n').slice(0, 6).join('\n')}`);
  };

  const corpus = [];
  const dir = corpusDir(name);
  if (o.merge) {
    const seeds = (await seedsOf(name, work)).map((b) => new Uint8Array(b));
    await cov.take();
    for (const input of seeds) await runOne(input);
    const entries = existsSync(dir) ? readdirSync(dir).map((f) => ({ f, size: readFileSync(join(dir, f)).length })) : [];
    entries.sort((a, b) => a.size - b.size || (a.f < b.f ? -1 : 1));
    for (const { f } of entries) {
      const res = await runOne(new Uint8Array(readFileSync(join(dir, f))));
      if (res.finding || res.fresh > 0) stats.corpus++;
      else {
        rmSync(join(dir, f));
        stats.saved--;
      }
    }
    stats.features = cov.seen.size;
    rmSync(work, { recursive: true, force: true });
    process.send?.({ stats });
    return;
  }
  const filesIn = (d) => (existsSync(d) ? readdirSync(d).sort().map((f) => new Uint8Array(readFileSync(join(d, f)))) : []);
  const committed = [...filesIn(dir), ...filesIn(regressionsDir(name))];
  await cov.take(); // the imports and seed making are not the target's coverage
  for (const input of [...(await seedsOf(name, work)).map((b) => new Uint8Array(b)), ...committed]) {
    const res = await runOne(input);
    if (res.finding) report(input, res.finding);
    else corpus.push(input);
  }
  stats.corpus = corpus.length;
  const deadline = performance.now() + o.seconds * 1000;
  while (performance.now() < deadline && stats.execs < o.runs && stats.findings < 5 && corpus.length > 0) {
    // newer entries (deeper coverage) are picked more often
    const pick = r.chance(0.5) ? corpus.length - 1 - r.below(Math.min(corpus.length, 8)) : r.below(corpus.length);
    const input = mutate(corpus[pick], r, dict, corpus[r.below(corpus.length)]);
    const res = await runOne(input);
    if (res.finding) {
      report(input, res.finding);
      continue;
    }
    if (res.fresh > 0) {
      corpus.push(input);
      if (o.save && input.length <= MAX_LEN) {
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, sha1(input)), input);
        stats.saved++;
      }
    }
  }
  stats.corpus = corpus.length;
  stats.features = cov.seen.size;
  await target.sae?.dispose?.();
  rmSync(work, { recursive: true, force: true });
  process.send?.({ stats });
  process.exitCode = stats.findings > 0 ? 1 : 0;
}

// ---- the parent: one child per target, a watchdog each -----------------------------------

function runChild(name, o) {
  return new Promise((resolve) => {
    const args = ['--child', name, '--seconds', String(o.seconds), ...(o.save ? ['--save'] : []), ...(o.merge ? ['--merge'] : []), ...(Number.isFinite(o.runs) ? ['--runs', String(o.runs)] : [])];
    const p = fork(import.meta.filename, args, { execArgv: ['--max-old-space-size=2048'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let stats;
    let current;
    let last = Date.now();
    let hung = false;
    p.on('message', (m) => {
      last = Date.now();
      if (m.stats) stats = m.stats;
      if (m.current) current = m.current;
    });
    const watchdog = setInterval(() => {
      if (Date.now() - last > HANG_MS) {
        hung = true;
        p.kill('SIGKILL');
      }
    }, 1000);
    p.on('exit', (code, signal) => {
      clearInterval(watchdog);
      if (!stats) {
        // died or hung: the input it was running is in its work folder
        const why = hung ? `no input finished in ${HANG_MS / 1000} s (a hang)` : `the process died (exit ${code}, signal ${signal})`;
        mkdirSync(FINDINGS, { recursive: true });
        if (current && existsSync(current)) {
          const f = current;
          const input = readFileSync(f);
          const out = join(FINDINGS, `${name}-${sha1(input)}.bin`);
          copyFileSync(f, out);
          writeFileSync(`${out}.txt`, `${why}\n`);
          console.error(`fuzz ${name}: FINDING (${out}): ${why}`);
          rmSync(join(f, '..'), { recursive: true, force: true });
        } else console.error(`fuzz ${name}: ${why}, before its first input`);
        stats = { target: name, execs: 0, findings: 1, died: why };
      }
      resolve(stats);
    });
  });
}

async function parent(o) {
  const { targets } = await import('./targets.js');
  const names = o.names.length > 0 ? o.names : Object.keys(targets);
  for (const n of names) if (!targets[n]) throw new Error(`no fuzz target '${n}' (targets: ${Object.keys(targets).join(', ')})`);
  const queue = [...names];
  const all = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(o.jobs, names.length) }, async () => {
      while (queue.length > 0) all.push(await runChild(queue.shift(), o));
    }),
  );
  all.sort((a, b) => names.indexOf(a.target) - names.indexOf(b.target));
  console.log(`fuzz: ${names.length} targets, ${o.seconds} s each, ${Math.round((performance.now() - t0) / 1000)} s in all`);
  console.log('target               seed        execs  loaded refused  corpus  saved features findings');
  for (const s of all) {
    const c = (v, w) => String(v ?? '-').padStart(w);
    console.log(`${s.target.padEnd(20)} ${c(s.seed, 10)} ${c(s.execs, 8)} ${c(s.loaded, 7)} ${c(s.refused, 7)} ${c(s.corpus, 7)} ${c(s.saved, 6)} ${c(s.features, 8)} ${c(s.findings, 8)}`);
  }
  const findings = all.reduce((n, s) => n + (s.findings ?? 0), 0);
  const execs = all.reduce((n, s) => n + (s.execs ?? 0), 0);
  console.log(`fuzz: ${execs} inputs tried, ${findings} findings${findings > 0 ? ` (inputs and errors in ${FINDINGS})` : ''}`);
  process.exitCode = findings > 0 ? 1 : 0;
}

const o = parseArgs(process.argv.slice(2));
await (o.child ? child(o.child, o) : parent(o));
