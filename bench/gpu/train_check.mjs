// Training through the built JS API on two devices (issue 20), used by bench/gpu/node_check.mjs
// on a GPU machine (cpu vs cuda); runnable anywhere with both devices 'cpu' as a dry run of the
// script itself:   node bench/gpu/train_check.mjs [deviceA deviceB]
// Per architecture, SaeTrainer on A and on B from one initial state, 3 steps on the same
// batches: the selections, gradients and weights against each other (the emulated tests'
// tolerances: native/cuda/emu/train_emu_test.cpp); then state() taken from B resumes on A and
// from A on B for 2 more steps, and must stay within the same tolerance of the uninterrupted
// runs (B's state into a fresh B must give B's weights bit for bit).
import { pathToFileURL } from 'node:url';

const { SaeTrainer, defaultTrainerConfig } = await import('../../dist/train/trainer.js');
const { initParams } = await import('../../dist/train/init.js');
const { Rng } = await import('../../dist/synthetic.js');

const TENSORS = ['W_enc', 'b_enc', 'W_dec', 'b_dec', 'log_threshold'];

function batch(rng, rows, d) {
  const x = new Float32Array(rows * d);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return x;
}

/** max |a - b| over the tensor, divided by SCALE (or by max |b| when SCALE is absent). */
function err(a, b, scale) {
  let worst = 0, mag = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i])), mag = Math.max(mag, Math.abs(b[i]));
  return worst / (scale ?? mag + 1e-30);
}

function sameSelection(a, b) {
  for (const aux of [false, true]) {
    const x = a.lastSelection(aux), y = b.lastSelection(aux);
    if (x.indptr.length !== y.indptr.length || x.indices.length !== y.indices.length) return false;
    if (x.indptr.some((v, i) => v !== y.indptr[i]) || x.indices.some((v, i) => v !== y.indices[i])) return false;
  }
  return true;
}

/** Returns [lines, failures]. */
export async function trainChecks(devA, devB, seed = 1 + Math.floor(Math.random() * 1e9)) {
  const lines = [];
  let failures = 0;
  const dIn = 64, dSae = 512, k = 8, rows = 256, lr = 1e-3;
  for (const architecture of ['topk', 'batchtopk', 'standard', 'jumprelu']) {
    const rng = new Rng(seed);
    const config = { ...defaultTrainerConfig(dIn, dSae, k, architecture), deadTokens: 2 * rows, ...(architecture === 'jumprelu' && { bandwidth: 0.05 }) };
    const xs = Array.from({ length: 5 }, () => batch(rng, rows, dIn));
    const init = initParams({ dIn, dSae, seed, bDecInit: 'zeros', sample: xs[0], ...(architecture === 'jumprelu' && { initThreshold: 0.3 }), ...(architecture === 'standard' && { decoderNorm: 0.1 }) });
    const trainers = [];
    let why = '';
    try {
      const a = await SaeTrainer.create(config, init, devA), b = await SaeTrainer.create(config, init, devB);
      trainers.push(a, b);
      let worstG = 0, worstP = 0;
      for (let s = 0; s < 3; s++) {
        const ga = await a.gradients(xs[s]), gb = await b.gradients(xs[s]);
        for (const t of TENSORS) if (ga.grads[t]) worstG = Math.max(worstG, err(gb.grads[t], ga.grads[t]));
        await a.trainStep(xs[s], lr);
        await b.trainStep(xs[s], lr);
        if (!sameSelection(a, b)) why ||= `step ${s + 1}: selections differ`;
        const pa = a.params(), pb = b.params();
        for (const t of TENSORS) if (pa[t]) worstP = Math.max(worstP, err(pb[t], pa[t], lr));
      }
      // Checkpoints: B's state into a fresh B (exact), into a fresh A and A's into a fresh B (close).
      const bb = await SaeTrainer.create(config, init, devB), ab = await SaeTrainer.create(config, init, devA), ba = await SaeTrainer.create(config, init, devB);
      trainers.push(bb, ab, ba);
      bb.loadState(b.state());
      ab.loadState(b.state());
      ba.loadState(a.state());
      for (let s = 3; s < 5; s++) for (const t of [a, b, bb, ab, ba]) await t.trainStep(xs[s], lr);
      let exact = true, cross = 0;
      const [pa, pb, pbb, pab, pba] = [a, b, bb, ab, ba].map((t) => t.params());
      for (const t of TENSORS) {
        if (!pb[t]) continue;
        exact &&= pbb[t].every((v, i) => v === pb[t][i]);
        cross = Math.max(cross, err(pab[t], pb[t], lr), err(pba[t], pa[t], lr));
      }
      if (!(worstG <= 1e-4)) why ||= `gradients differ by ${worstG.toExponential(2)} of their scale`;
      if (!(worstP <= 1e-2)) why ||= `weights differ by ${worstP.toExponential(2)} lr`;
      if (!exact) why ||= `${devB} -> ${devB} resume is not bit-identical`;
      if (!(cross <= 1e-2)) why ||= `cross-device resume differs by ${cross.toExponential(2)} lr`;
      lines.push(`- ${why ? 'FAIL' : 'ok  '} ${architecture}: ${devA} vs ${devB}, 3 steps (rows ${rows}, d_in ${dIn}, d_sae ${dSae}, seed ${seed}): gradients ${worstG.toExponential(2)}, weights ${worstP.toExponential(2)} lr; resume ${devB} -> ${devB} ${exact ? 'bit-identical' : 'DIFFERS'}, across devices within ${cross.toExponential(2)} lr${why ? `: ${why}` : ''}`);
    } catch (e) {
      why = e.message;
      lines.push(`- FAIL ${architecture}: ${why}`);
    } finally {
      for (const t of trainers) t.dispose();
    }
    if (why) failures++;
  }
  return [lines, failures];
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [lines, failures] = await trainChecks(process.argv[2] ?? 'cpu', process.argv[3] ?? 'cpu');
  for (const l of lines) console.log(l);
  process.exit(failures === 0 ? 0 : 1);
}
