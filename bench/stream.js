// Streaming encode memory check: `node bench/stream.js [rows1 rows2 ...]`.
// Writes activation dumps of growing size (d_in 768), encodes each with `saekit encode` in a
// child process, and reports the child's peak RSS next to the input size: the pipeline holds
// at most two input chunks and two code chunks, so peak RSS should not grow with the file.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNpyHeader, saveSaeLens, syntheticSae, Rng } from '../dist/index.js';

const sizes = process.argv.slice(2).map(Number);
if (sizes.length === 0) sizes.push(50_000, 400_000);
const dIn = 768;
const dir = await mkdtemp(join(tmpdir(), 'saekit-stream-'));
try {
  const w = syntheticSae({ dIn, dSae: 4096, architecture: 'topk', k: 32, seed: 3 });
  await saveSaeLens(join(dir, 'sae'), w);
  console.log('| input rows | input size | encode s | tokens/s | peak RSS |');
  console.log('|---|---|---|---|---|');
  for (const rows of sizes) {
    const input = join(dir, `acts-${rows}.npy`);
    // Written in pieces, so this script's own memory stays small too.
    const fh = await open(input, 'w');
    const header = encodeNpyHeader([rows, dIn]);
    await fh.write(header, 0, header.length, 0);
    const rng = new Rng(rows);
    const piece = 8192;
    for (let r = 0; r < rows; r += piece) {
      const n = Math.min(piece, rows - r);
      const x = rng.fillNormal(new Float32Array(n * dIn));
      await fh.write(new Uint8Array(x.buffer), 0, x.byteLength, header.length + r * dIn * 4);
    }
    await fh.close();
    const t0 = performance.now();
    const child = spawnSync(
      process.execPath,
      ['-e', `import('${new URL('../dist/cli/main.js', import.meta.url).href}').then(async (m) => { const c = await m.main(process.argv.slice(1)); console.log(JSON.stringify({ code: c, maxRss: process.resourceUsage().maxRSS })); })`,
        'encode', '--sae', join(dir, 'sae'), '--input', input, '--output', join(dir, 'codes.safetensors')],
      { encoding: 'utf8' },
    );
    const seconds = (performance.now() - t0) / 1e3;
    const res = JSON.parse(child.stdout.trim().split('\n').pop());
    if (res.code !== 0) throw new Error(child.stderr);
    console.log(`| ${rows} | ${((rows * dIn * 4) / 2 ** 20).toFixed(0)} MiB | ${seconds.toFixed(1)} | ${Math.round(rows / seconds)} | ${(res.maxRss / 1024).toFixed(0)} MiB |`);
    await rm(input);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
