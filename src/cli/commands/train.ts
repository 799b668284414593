// `saekit train`: trains an SAE (TopK, batch top-k, standard, JumpReLU, Matryoshka) or a
// transcoder on an activation dump and saves it as a SAELens directory. `--sweep k=16,32,64`
// trains one run per value from ONE read of the data. Ctrl-C stops after the current step
// with a checkpoint; `--resume` continues exactly.
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { UsageError } from '../../errors.js';
import { trainSweep, type MetricsRecord, type TrainJobOptions } from '../../train/train.js';
import { applyThreads, choice, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { progressLines, unitReporter } from '../progress.js';

export const trainUsage =
  'saekit train --input PATH --output DIR --k N (--expansion N | --d-sae N) --tokens N [--arch topk|batchtopk|standard|jumprelu|matryoshka|transcoder|skip-transcoder] ' +
  '[--activation topk|batchtopk|standard|jumprelu (transcoders; default topk)] [--target PATH] [--target-tensor NAME] [--hook-name-out H] [--matryoshka-widths W1,W2,...] ' +
  '[--resample-every STEPS (dead-latent resampling)] [--sweep KEY=V1,V2,... (k, d-sae, expansion, lr, arch, l1-coeff, l0-coeff, aux-coeff, k-aux, dead-tokens, bandwidth; repeat for a grid)] [--l1-coeff X] [--l0-coeff X] [--bandwidth X] [--init-threshold X] [--batch-size N] ' +
  '[--lr X] [--warmup-steps N] [--decay linear|cosine|none] [--k-aux N] [--aux-coeff X] [--dead-tokens N] [--clip X] ' +
  '[--normalize expected_average_only_in|none] [--b-dec-init geometric_median|mean|zeros] [--seed N] [--shuffle-window N] ' +
  '[--log-every N] [--checkpoint-every N] [--resume] [--tensor NAME] [--hook-name H] [--model-name M] [--dtype float32|float16|bfloat16] ' +
  '[--device D] [--threads N]';

function line(r: MetricsRecord): string {
  return (
    `step ${r.step} tokens ${r.tokens} lr ${r.lr.toExponential(2)} mse ${r.mse.toPrecision(4)} ` +
    `explained ${(100 * r.explained_variance).toFixed(2)}% L0 ${r.l0.toFixed(1)} dead ${(100 * r.dead_fraction).toFixed(1)}% ` +
    `auxk ${r.aux_loss.toPrecision(3)}${r.sparsity_loss ? ` sparsity ${r.sparsity_loss.toPrecision(3)}` : ''} ${Math.round(r.tokens_per_second)} tok/s`
  );
}

export async function trainCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, {
    ...commonFlags,
    input: str,
    output: str,
    arch: str,
    k: str,
    expansion: str,
    'd-sae': str,
    tokens: str,
    'batch-size': str,
    lr: str,
    'warmup-steps': str,
    decay: str,
    'k-aux': str,
    'aux-coeff': str,
    'dead-tokens': str,
    clip: str,
    'l1-coeff': str,
    'l0-coeff': str,
    bandwidth: str,
    'init-threshold': str,
    normalize: str,
    'b-dec-init': str,
    seed: str,
    'shuffle-window': str,
    'log-every': str,
    'checkpoint-every': str,
    resume: { type: 'boolean' },
    tensor: str,
    'hook-name': str,
    'model-name': str,
    dtype: str,
    activation: str,
    target: str,
    'target-tensor': str,
    'hook-name-out': str,
    'matryoshka-widths': str,
    sweep: { type: 'string', multiple: true },
    'resample-every': str,
  });
  const archFlag = choice(values, 'arch', ['topk', 'batchtopk', 'standard', 'jumprelu', 'matryoshka', 'transcoder', 'skip-transcoder'] as const) ?? 'topk';
  const transcoder = archFlag === 'transcoder' || archFlag === 'skip-transcoder';
  const activation = choice(values, 'activation', ['topk', 'batchtopk', 'standard', 'jumprelu'] as const);
  if (activation !== undefined && !transcoder) throw new UsageError('--activation goes with --arch transcoder|skip-transcoder (an SAE names its activation with --arch)');
  const arch = transcoder ? (activation ?? 'topk') : archFlag;
  const k = num(values, 'k', 'int', 1) ?? 0;
  if (k === 0 && (arch === 'topk' || arch === 'batchtopk' || arch === 'matryoshka') && !(values.sweep as string[] | undefined)?.some((s) => s.startsWith('k=')))
    throw new UsageError('missing required flag --k');
  const tokens = num(values, 'tokens', 'int', 1);
  if (tokens === undefined) throw new UsageError('missing required flag --tokens');
  if (values.expansion !== undefined && values['d-sae'] !== undefined) throw new UsageError('give --expansion or --d-sae, not both');
  applyThreads(values);

  const opts: TrainJobOptions = { input: required(values, 'input'), output: required(values, 'output'), architecture: arch, tokens, device: deviceFlag(values) };
  if (transcoder) opts.kind = archFlag;
  if (values.target !== undefined) opts.target = values.target as string;
  if (values['target-tensor'] !== undefined) opts.targetTensor = values['target-tensor'] as string;
  if (values['hook-name-out'] !== undefined) opts.hookNameOut = values['hook-name-out'] as string;
  if ((values.target !== undefined || values['target-tensor'] !== undefined) && !transcoder) throw new UsageError('--target and --target-tensor go with --arch transcoder|skip-transcoder');
  if (values['matryoshka-widths'] !== undefined) {
    if (arch !== 'matryoshka') throw new UsageError('--matryoshka-widths goes with --arch matryoshka');
    opts.matryoshkaWidths = intList(values['matryoshka-widths'] as string, '--matryoshka-widths');
  }
  if (k > 0) opts.k = k;
  const set = <K extends keyof TrainJobOptions>(key: K, v: TrainJobOptions[K] | undefined) => {
    if (v !== undefined) opts[key] = v;
  };
  set('dSae', num(values, 'd-sae', 'int', 1));
  set('expansion', num(values, 'expansion', 'int', 1));
  set('batchSize', num(values, 'batch-size', 'int', 1));
  set('lr', num(values, 'lr', 'float'));
  set('warmupSteps', num(values, 'warmup-steps', 'int'));
  set('decay', choice(values, 'decay', ['linear', 'cosine', 'none'] as const));
  set('kAux', num(values, 'k-aux', 'int'));
  set('auxCoeff', num(values, 'aux-coeff', 'float'));
  set('deadTokens', num(values, 'dead-tokens', 'int'));
  set('clip', num(values, 'clip', 'float'));
  set('l1Coeff', num(values, 'l1-coeff', 'float'));
  set('l0Coeff', num(values, 'l0-coeff', 'float'));
  set('bandwidth', num(values, 'bandwidth', 'float'));
  set('initThreshold', num(values, 'init-threshold', 'float'));
  set('normalize', choice(values, 'normalize', ['expected_average_only_in', 'none'] as const));
  set('bDecInit', choice(values, 'b-dec-init', ['geometric_median', 'mean', 'zeros'] as const));
  set('seed', num(values, 'seed', 'int'));
  set('resampleEvery', num(values, 'resample-every', 'int'));
  set('shuffleWindow', num(values, 'shuffle-window', 'int'));
  set('logEvery', num(values, 'log-every', 'int', 1));
  set('checkpointEvery', num(values, 'checkpoint-every', 'int'));
  set('resume', values.resume as boolean | undefined);
  set('tensor', values.tensor as string | undefined);
  set('hookName', values['hook-name'] as string | undefined);
  set('modelName', values['model-name'] as string | undefined);
  set('saveDtype', choice(values, 'dtype', ['float32', 'float16', 'bfloat16'] as const));

  const say = (s: string) => process.stdout.write(`${s}\n`);
  const tty = process.stderr.isTTY && !process.env.CI && !progressLines();
  const bar = tty
    ? new cliProgress.SingleBar(
        { format: 'train [{bar}] {percentage}% | step {value}/{total} | {rate} tok/s | {metrics}', stream: process.stderr, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let barStarted = false;
  let metrics = '';
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write('\nsaekit train: stopping after this step (checkpoint follows; Ctrl-C again to quit at once)\n');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  opts.signal = abort.signal;
  opts.onStep = (p) => {
    if (!bar) return;
    if (!barStarted) {
      bar.start(p.totalSteps, p.step, { rate: 0, metrics });
      barStarted = true;
    }
    bar.update(p.step, { rate: Math.round(p.tokensPerSecond), metrics });
  };
  const checkpointDone = unitReporter('train', 'checkpoint');
  opts.onCheckpoint = (p) => checkpointDone(p.step, p.totalSteps);
  opts.onLog = (r) => {
    metrics = `explained ${(100 * r.explained_variance).toFixed(1)}% L0 ${r.l0.toFixed(1)} dead ${(100 * r.dead_fraction).toFixed(1)}%`;
    if (!bar) say(line(r));
  };
  const runs = sweepRuns(opts, (values.sweep as string[] | undefined) ?? []);
  if (runs.length > 1) {
    // One progress bar for the stream: the first run's steps stand for all.
    const first = runs[0]!.onStep;
    runs.forEach((r, i) => {
      if (i > 0) delete r.onStep;
      r.onLog = (rec) => {
        metrics = `run ${i + 1}/${runs.length}: explained ${(100 * rec.explained_variance).toFixed(1)}% L0 ${rec.l0.toFixed(1)}`;
        if (!bar) say(`[${r.output}] ${line(rec)}`);
      };
    });
    if (first) runs[0]!.onStep = first;
  }
  try {
    const results = await trainSweep(runs);
    bar?.stop();
    if (results[0]!.stopped) {
      say(`stopped at step ${results[0]!.steps} with a checkpoint in ${runs.map((r) => `${r.output}/checkpoint`).join(', ')}; continue with the same flags plus --resume`);
      return 130;
    }
    for (const result of results) {
      const t = result.trainer;
      const last = result.last;
      const what = t.transcoder ? `${t.skip ? 'skip ' : ''}transcoder (${t.architecture}) d_in ${t.dIn} d_out ${t.dOut}` : `${t.matryoshkaWidths ? 'matryoshka' : t.architecture} SAE d_in ${t.dIn}`;
      say(
        `trained a ${what} d_sae ${t.dSae} k ${t.k} on ${result.tokens} tokens in ${result.seconds.toFixed(1)} s ` +
          `(${Math.round(result.tokensPerSecond)} tokens/s)` +
          (last ? `: explained variance ${(100 * last.explainedVariance).toFixed(2)}%, L0 ${last.l0.toFixed(1)}, dead ${(100 * last.deadFraction).toFixed(1)}%` : ''),
      );
      say(`saved SAELens directory ${result.output} (metrics in ${result.output}/metrics.jsonl)`);
    }
    return 0;
  } finally {
    bar?.stop();
    process.off('SIGINT', onSigint);
  }
}

function intList(text: string, flag: string): number[] {
  const out = text.split(',').map((v) => Number(v.trim()));
  if (out.length === 0 || out.some((v) => !Number.isSafeInteger(v) || v < 1)) throw new UsageError(`${flag} takes comma-separated positive integers (got '${text}')`);
  return out;
}

/** --sweep KEY=V1,V2: the option each key sets, and how its values parse. */
const SWEEP_KEYS: Record<string, { option: keyof TrainJobOptions; kind: 'int' | 'float' | 'arch' }> = {
  k: { option: 'k', kind: 'int' },
  'd-sae': { option: 'dSae', kind: 'int' },
  expansion: { option: 'expansion', kind: 'int' },
  lr: { option: 'lr', kind: 'float' },
  arch: { option: 'architecture', kind: 'arch' },
  'l1-coeff': { option: 'l1Coeff', kind: 'float' },
  'l0-coeff': { option: 'l0Coeff', kind: 'float' },
  'aux-coeff': { option: 'auxCoeff', kind: 'float' },
  'k-aux': { option: 'kAux', kind: 'int' },
  'dead-tokens': { option: 'deadTokens', kind: 'int' },
  bandwidth: { option: 'bandwidth', kind: 'float' },
};

/**
 * The runs of a sweep: the cross product of every --sweep KEY=V1,V2,... over the base options,
 * each saved under OUTPUT/KEY-VALUE[_KEY-VALUE...]. No --sweep: the one base run.
 */
export function sweepRuns(base: TrainJobOptions, sweeps: string[]): TrainJobOptions[] {
  let runs: { o: TrainJobOptions; name: string[] }[] = [{ o: { ...base }, name: [] }];
  const seen = new Set<string>();
  for (const spec of sweeps) {
    const eq = spec.indexOf('=');
    const key = eq > 0 ? spec.slice(0, eq) : '';
    const how = SWEEP_KEYS[key];
    if (!how) throw new UsageError(`--sweep takes KEY=V1,V2,... with KEY one of ${Object.keys(SWEEP_KEYS).join(', ')} (got '${spec}')`);
    if (seen.has(key)) throw new UsageError(`--sweep ${key} is given twice`);
    seen.add(key);
    const texts = spec.slice(eq + 1).split(',').map((v) => v.trim());
    const values = texts.map((t) => {
      if (how.kind === 'arch') {
        if (!['topk', 'batchtopk', 'standard', 'jumprelu', 'matryoshka'].includes(t)) throw new UsageError(`--sweep arch: '${t}' is not topk, batchtopk, standard, jumprelu or matryoshka`);
        return t;
      }
      const v = Number(t);
      if (t === '' || !Number.isFinite(v) || v < 0 || (how.kind === 'int' && !Number.isSafeInteger(v))) throw new UsageError(`--sweep ${key}: '${t}' is not a ${how.kind === 'int' ? 'non-negative integer' : 'number'}`);
      return v;
    });
    if (new Set(texts).size !== texts.length) throw new UsageError(`--sweep ${key} repeats a value`);
    runs = runs.flatMap((r) => values.map((v, i) => ({ o: { ...r.o, [how.option]: v } as TrainJobOptions, name: [...r.name, `${key}-${texts[i]}`] })));
  }
  if (seen.has('d-sae') || seen.has('expansion')) for (const r of runs) if (r.o.dSae !== undefined && r.o.expansion !== undefined) throw new UsageError('--sweep d-sae and --expansion (or --d-sae and a sweep of expansion) cannot be combined');
  return runs.map((r) => (r.name.length === 0 ? r.o : { ...r.o, output: join(base.output, r.name.join('_')) }));
}
