// `saekit train`: trains a TopK SAE on an activation dump and saves it as a SAELens directory.
// Ctrl-C stops after the current step with a checkpoint; `--resume` continues exactly.
import cliProgress from 'cli-progress';
import { UsageError } from '../../errors.js';
import { train, type MetricsRecord, type TrainJobOptions } from '../../train/train.js';
import { applyThreads, choice, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { progressLines, unitReporter } from '../progress.js';

export const trainUsage =
  'saekit train --input PATH --output DIR --k N (--expansion N | --d-sae N) --tokens N [--arch topk|batchtopk|standard|jumprelu] [--l1-coeff X] [--l0-coeff X] [--bandwidth X] [--init-threshold X] [--batch-size N] ' +
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
  });
  const arch = choice(values, 'arch', ['topk', 'batchtopk', 'standard', 'jumprelu'] as const) ?? 'topk';
  const k = num(values, 'k', 'int', 1) ?? 0;
  if (k === 0 && (arch === 'topk' || arch === 'batchtopk')) throw new UsageError('missing required flag --k');
  const tokens = num(values, 'tokens', 'int', 1);
  if (tokens === undefined) throw new UsageError('missing required flag --tokens');
  if (values.expansion !== undefined && values['d-sae'] !== undefined) throw new UsageError('give --expansion or --d-sae, not both');
  applyThreads(values);

  const opts: TrainJobOptions = { input: required(values, 'input'), output: required(values, 'output'), architecture: arch, tokens, device: deviceFlag(values) };
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
  try {
    const result = await train(opts);
    bar?.stop();
    const t = result.trainer;
    if (result.stopped) {
      say(`stopped at step ${result.steps} with a checkpoint in ${opts.output}/checkpoint; continue with the same flags plus --resume`);
      return 130;
    }
    const last = result.last;
    say(
      `trained a ${t.architecture} SAE d_in ${t.dIn} d_sae ${t.dSae} k ${t.k} on ${result.tokens} tokens in ${result.seconds.toFixed(1)} s ` +
        `(${Math.round(result.tokensPerSecond)} tokens/s)` +
        (last ? `: explained variance ${(100 * last.explainedVariance).toFixed(2)}%, L0 ${last.l0.toFixed(1)}, dead ${(100 * last.deadFraction).toFixed(1)}%` : ''),
    );
    say(`saved SAELens directory ${opts.output} (metrics in ${opts.output}/metrics.jsonl)`);
    return 0;
  } finally {
    bar?.stop();
    process.off('SIGINT', onSigint);
  }
}
