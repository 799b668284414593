// The CUDA kernel source run under CPU emulation (native/cuda/emu/cuda_emu.h): the executable
// built with the addon runs each kernel at small, awkward shapes against float64 references,
// the emulation's warp intrinsics against scalar code, and the CUDA backend's model (the same
// host code the addon's CUDA backend runs) through the backend interface against the CPU
// backend, every architecture. This is how CI (no GPU) tests the
// GPU kernels; the same source is compiled by nvcc into the addon wherever nvcc exists.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshSeed } from './helpers/testData.js';

// SAEKIT_KERNEL_EMU names another build of it (scripts/sanitize.sh runs its sanitized one).
const exe = process.env.SAEKIT_KERNEL_EMU
  ? resolve(process.env.SAEKIT_KERNEL_EMU)
  : ['build/saekit_kernel_emu', 'build/Release/saekit_kernel_emu'].map((p) => join(process.cwd(), p)).find((p) => existsSync(p));

describe('CUDA kernels under CPU emulation', () => {
  it('the kernels match float64 references and the emulated CUDA model matches the CPU backend', { timeout: 300_000 }, () => {
    expect(exe, 'build/saekit_kernel_emu is missing: npm install (cmake-js) builds it with the addon').toBeDefined();
    const seed = freshSeed('cuda.emu.test');
    // One OS thread per emulated CUDA thread (256 per block for the tensor-core screen): slow on
    // a busy 2-core machine, hence the generous limits.
    const r = spawnSync(exe!, [String(seed)], { encoding: 'utf8', timeout: 240_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('ok ')).length).toBeGreaterThanOrEqual(33);
    expect(lines.filter((l) => l.includes('mma m16n8k16')).length).toBe(2);
    // The tensor-core screened top-k equals the fp32 kernel exactly (near ties and fallback included).
    expect(lines.filter((l) => l.includes('encode_screened_bf16') && l.includes('identical to the fp32 kernel')).length).toBe(12);
    expect(lines.filter((l) => l.includes('latent split in')).length).toBe(6);
    // The threshold screen (standard / jumprelu) equals the fp32 threshold kernel, overflow included.
    expect(lines.filter((l) => l.includes('encode_screened_threshold') && l.includes('identical to the fp32 kernel')).length).toBe(3);
    expect(lines.some((l) => l.includes('encode_screened_threshold') && l.includes('overflow rows 9'))).toBe(true);
    // The forced fallback (cap below k) overflowed every row, and the default cap none.
    expect(lines.filter((l) => l.includes('cap 132') && l.includes('overflow rows 9')).length).toBe(2);
    // The adversarial case where Cauchy-Schwarz is tight ran through the screen, not the fallback.
    expect(lines.some((l) => l.includes('Cauchy-Schwarz tight') && l.includes('overflow rows 0'))).toBe(true);
    expect(lines.filter((l) => l.includes('encode_screened_bf16') && !l.includes('cap 132') && !l.includes('overflow rows 0')).length).toBe(0);
    expect(lines.filter((l) => l.includes('encode_topk_f32')).length).toBe(5);
    expect(lines.filter((l) => /encode_(standard|jumprelu)_f32/.test(l)).length).toBe(4);
    // The CUDA backend's model (host logic + kernels, emulated) against the CPU backend.
    expect(lines.filter((l) => l.includes('CudaModel vs CPU backend')).length).toBe(13);
    expect(lines.filter((l) => l.includes('CudaModel vs CPU backend: transcoder')).length).toBe(3);
    expect(lines.some((l) => l.startsWith('FAIL'))).toBe(false);
    expect(lines.at(-1)).toBe('all passed');
  });

  // Issue 20: the training kernels (kernels/train_step.cuh) and the CUDA trainer (cuda_trainer.h)
  // under the same emulation: each kernel against float64 at awkward sizes, whole steps against
  // the CPU trainer from a common state, bit-identical reruns, planted features.
  const trainExe = process.env.SAEKIT_TRAIN_EMU
    ? resolve(process.env.SAEKIT_TRAIN_EMU)
    : ['build/saekit_train_emu', 'build/Release/saekit_train_emu'].map((p) => join(process.cwd(), p)).find((p) => existsSync(p));
  // The three groups (kernels, whole steps, planted features) as processes at once: they are
  // independent, and the emulation spends its time starting threads, so both cores help.
  function runTrainEmu(seed: number, group: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return new Promise((done, fail) => {
      const child = spawn(trainExe!, [String(seed), group], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 540_000 });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', fail);
      child.on('close', (status) => done({ status, stdout, stderr }));
    });
  }
  const ARCHS = ['topk', 'batchtopk', 'standard', 'jumprelu'];
  it('the training kernels match float64 references and the emulated CUDA trainer matches the CPU trainer', { timeout: 600_000 }, async () => {
    expect(trainExe, 'build/saekit_train_emu is missing: npm install (cmake-js) builds it with the addon').toBeDefined();
    const seed = freshSeed('cuda.train.emu');
    const runs = await Promise.all([runTrainEmu(seed, 'kernels'), runTrainEmu(seed, 'step'), runTrainEmu(seed, 'planted')]);
    for (const r of runs) {
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout.trim().split('\n').at(-1)).toBe('all passed');
    }
    const lines = runs.flatMap((r) => r.stdout.trim().split('\n'));
    expect(lines.filter((l) => l.startsWith('ok ')).length).toBe(46);
    expect(lines.filter((l) => l.includes('train_residual') && l.includes('float64 reference')).length).toBe(4);
    expect(lines.filter((l) => l.includes('train_residual csr + per-latent dL/dpre term')).length).toBe(1);
    expect(lines.filter((l) => l.includes('train_latent_grads') && l.includes('(projected)')).length).toBe(3);
    expect(lines.filter((l) => l.includes('train_latent_grads') && l.includes('(L1 term, zero row, no projection)')).length).toBe(1);
    expect(lines.filter((l) => l.includes('train_bdec_grad')).length).toBe(2);
    expect(lines.filter((l) => l.includes('train_pair_dots') && l.includes('train_row_norms')).length).toBe(2);
    expect(lines.filter((l) => l.includes('train_transpose') && l.includes('exact')).length).toBe(2);
    expect(lines.filter((l) => l.includes('train_adam (one launch') && l.includes('zero row kept')).length).toBe(1);
    expect(lines.filter((l) => l.includes('train_aux_topk')).length).toBe(4);
    // Whole steps from a common state, every architecture: the same selections and counters,
    // gradients, moments and weights within the fp32 tolerances (train_emu_test.cpp says why).
    const steps = (arch: string) => lines.filter((l) => l.includes(`CudaTrainer ${arch} step vs CPU trainer`));
    expect(ARCHS.map((a) => steps(a).length)).toEqual([4, 3, 2, 2]);
    for (const a of ARCHS) for (const l of steps(a)) expect(l).toContain('selections identical, counters identical');
    expect(steps('topk').filter((l) => !l.includes('aux_loss 0.00e+00')).length).toBeGreaterThanOrEqual(2); // AuxK ran
    expect(steps('batchtopk').filter((l) => !l.includes('aux_loss 0.00e+00')).length).toBeGreaterThanOrEqual(1);
    for (const l of steps('standard')) expect(l).toMatch(/L1 loss [1-9]/);
    for (const l of steps('jumprelu')) expect(l).toMatch(/\|dL\/dlog_threshold\| max [1-9]/);
    for (const a of ARCHS) {
      expect(lines.some((l) => l.includes(`CudaTrainer ${a} deterministic`) && l.includes('bit-identical'))).toBe(true);
      // Checkpoints: resumed == uninterrupted on the (emulated) device; across devices within tolerance.
      expect(lines.some((l) => l.includes(`CudaTrainer ${a} checkpoint resume`) && l.includes('CUDA -> CUDA bit-identical'))).toBe(true);
      expect(lines.filter((l) => l.includes(`CudaTrainer ${a} planted features`)).length).toBe(1);
    }
    expect(lines.some((l) => l.includes('refuses transcoders, skip transcoders, matryoshka by name') && l.includes('(3/3)'))).toBe(true);
    // The pinned, chunked upload refuses a bad row by name and changes nothing; the phase profile.
    expect(lines.some((l) => l.includes("non-finite input: 'training batch row 7 has a non-finite value at column 4', then state identical"))).toBe(true);
    expect(lines.some((l) => l.includes('phase report (SAEKIT_TRAIN_PROFILE)') && l.includes('off without the variable'))).toBe(true);
    // The self-test gating device 'auto' for training passes here and catches a trainer that differs.
    expect(lines.some((l) => l.includes("trainer self-test (gates device 'auto' for training): CUDA trainer passes; a wrong trainer: 'topk: step 1: the main selection differs"))).toBe(true);
    expect(lines.some((l) => l.startsWith('FAIL'))).toBe(false);
  });
});
