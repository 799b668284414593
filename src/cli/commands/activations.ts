// `saekit activations`: run a corpus through a language model and dump one hook's
// activations (sharded safetensors + token ids + manifest.json) for training and encoding;
// with --hook-out, a second hook from the same pass beside it (transcoders' input/output pairs).
import { UsageError } from '../../errors.js';
import { dumpActivations } from '../../model/activations.js';
import { choice, num, parse, required } from '../args.js';
import { clipContext, loadModelFromFlags, modelFlags, modelUsage } from '../modelFlags.js';
import { progressBar, unitReporter } from '../progress.js';

export const activationsUsage =
  `saekit activations ${modelUsage} --hook blocks.L.hook_resid_pre [--hook-out blocks.L.hook_mlp_out] --text CORPUS(.txt|.jsonl) --tokens N --output DIR ` +
  '[--context-size 128] [--no-bos] [--text-field text] [--batch-size 8] [--shard-windows N] [--dtype float32|float16|bfloat16]';

export async function activationsCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, {
    ...modelFlags,
    hook: str,
    'hook-out': str,
    text: str,
    'text-field': str,
    tokens: str,
    output: str,
    'context-size': str,
    'no-bos': { type: 'boolean' },
    'batch-size': str,
    'shard-windows': str,
    dtype: str,
  });
  const tokens = num(values, 'tokens', 'int', 1);
  if (tokens === undefined) throw new UsageError('missing required flag --tokens');
  const hook = required(values, 'hook');
  const text = required(values, 'text');
  const output = required(values, 'output');
  const model = await loadModelFromFlags(values);
  // Progress lines count shards (written files), not the bar's model batches.
  const bar = progressBar('activations', undefined);
  const shardDone = unitReporter('activations', 'shard');
  try {
    const r = await dumpActivations(model, {
      hook,
      ...(values['hook-out'] !== undefined && { hookOut: values['hook-out'] as string }),
      corpus: text,
      output,
      tokens,
      contextSize: clipContext(num(values, 'context-size', 'int', 1) ?? 128, '--context-size', model),
      prependBos: values['no-bos'] !== true,
      ...(values['text-field'] !== undefined && { textField: values['text-field'] as string }),
      ...(values['batch-size'] !== undefined && { batchSize: num(values, 'batch-size', 'int', 1) }),
      ...(values['shard-windows'] !== undefined && { shardWindows: num(values, 'shard-windows', 'int', 1) }),
      dtype: choice(values, 'dtype', ['float32', 'float16', 'bfloat16'] as const) ?? 'float32',
      onProgress: (p) => bar.update(p),
      onShard: (p) => shardDone(p.rowsDone, p.rows),
    });
    bar.stop();
    const m = r.manifest;
    if (r.alreadyComplete) {
      process.stderr.write(`${output} already holds this dump, finished (${m.rows} tokens of ${m.hook_name}${m.hook_name_out !== undefined ? ` -> ${m.hook_name_out}` : ''}, ${m.activations.length} shard${m.activations.length === 1 ? '' : 's'}): nothing to do\n`);
      return 0;
    }
    const pair = m.hook_name_out !== undefined ? ` + ${m.hook_name_out} [${m.rows}, ${m.d_out}]` : '';
    process.stderr.write(
      `dumped ${m.rows} tokens (${m.windows} windows of ${m.context_size}) of ${m.hook_name} [${m.rows}, ${m.d_in}]${pair} ${m.dtype} ` +
        `-> ${output} (${m.activations.length} shard${m.activations.length === 1 ? '' : 's'}): ${r.seconds.toFixed(2)} s, ` +
        `${Math.round(m.rows / r.seconds)} tokens/s (${Math.round((100 * r.forwardSeconds) / r.seconds)}% in the model)\n`,
    );
    return 0;
  } finally {
    bar.stop();
    await model.dispose();
  }
}
