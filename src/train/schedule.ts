// Learning-rate schedules: linear warmup from 0, a constant plateau, then a decay over the
// last part of the run (linear or cosine) to lrEnd. SAELens and Gao et al. use these shapes.
import { expected } from '../errors.js';

export type DecayKind = 'none' | 'linear' | 'cosine';

export interface LrSchedule {
  lr: number;
  totalSteps: number;
  warmupSteps: number;
  decay: DecayKind;
  /** Steps at the end of the run over which the rate decays (ignored for 'none'). */
  decaySteps: number;
  lrEnd: number;
}

export function validateSchedule(s: LrSchedule): void {
  if (!(s.lr >= 0) || !Number.isFinite(s.lr)) throw expected('a finite number >= 0', 'lr', s.lr);
  if (!(s.lrEnd >= 0) || !Number.isFinite(s.lrEnd)) throw expected('a finite number >= 0', 'lrEnd', s.lrEnd);
  for (const [name, v] of [['totalSteps', s.totalSteps], ['warmupSteps', s.warmupSteps], ['decaySteps', s.decaySteps]] as const)
    if (!Number.isSafeInteger(v) || v < 0) throw expected('an integer >= 0', name, v);
  if (!['none', 'linear', 'cosine'].includes(s.decay)) throw expected("'none', 'linear' or 'cosine'", 'decay', s.decay);
}

/** The rate for step `step` (0-based). */
export function learningRate(s: LrSchedule, step: number): number {
  let lr = s.lr;
  // (the last warmup step is exactly lr: (lr * w) / w can round one ulp off)
  if (s.warmupSteps > 0 && step + 1 < s.warmupSteps) lr = (s.lr * (step + 1)) / s.warmupSteps;
  const decayStart = s.totalSteps - s.decaySteps;
  if (s.decay !== 'none' && s.decaySteps > 0 && step >= decayStart) {
    const p = Math.min(1, (step - decayStart + 1) / s.decaySteps);
    const f = s.decay === 'linear' ? 1 - p : 0.5 * (1 + Math.cos(Math.PI * p));
    lr = Math.min(lr, s.lrEnd + (s.lr - s.lrEnd) * f);
  }
  return lr;
}
