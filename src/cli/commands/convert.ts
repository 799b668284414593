import { UsageError } from '../../errors.js';
import { convertToSaeLens } from '../../formats/convert.js';
import { parse, choice, required } from '../args.js';

export const convertUsage = 'saekit convert SRC --output DIR [--dtype float32|float16|bfloat16] [--hook-name H] [--hook-name-out H] [--model-name M]';

/**
 * Writes any SAE folder saekit loads (sparsify, Gemma Scope, Gemma Scope 2, SAELens) as a
 * SAELens directory, checked against the schema of what SAELens reads; prints what was
 * written and what was inferred as JSON. Refuses a non-empty output.
 */
export async function convertCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { output: { type: 'string' }, dtype: { type: 'string' }, 'hook-name': { type: 'string' }, 'hook-name-out': { type: 'string' }, 'model-name': { type: 'string' } },
    true,
  );
  if (positionals.length !== 1) throw new UsageError(`expected one source folder but got ${positionals.length}`);
  const output = required(values, 'output');
  const dtype = choice(values, 'dtype', ['float32', 'float16', 'bfloat16'] as const);
  const r = await convertToSaeLens(positionals[0]!, output, {
    ...(dtype !== undefined && { dtype }),
    ...(values['hook-name'] !== undefined && { hookName: values['hook-name'] as string }),
    ...(values['hook-name-out'] !== undefined && { hookNameOut: values['hook-name-out'] as string }),
    ...(values['model-name'] !== undefined && { modelName: values['model-name'] as string }),
  });
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  if (!r.loadable) process.stderr.write(`saekit convert: warning: ${output} is a saekit ${r.architecture}, which SAELens cannot load (saekit can)\n`);
  return 0;
}
