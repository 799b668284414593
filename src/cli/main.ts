// `saekit` command dispatch. Exit codes: 0 success, 1 error (one line on stderr naming the
// file/tensor/flag at fault), 2 bad usage.
import { SaekitError, UsageError } from '../errors.js';
import { saekitVersion } from '../system.js';
import { decodeCommand, decodeUsage } from './commands/decode.js';
import { demoCommand, demoUsage } from './commands/demo.js';
import { doctorCommand, doctorUsage } from './commands/doctor.js';
import { encodeCommand, encodeUsage } from './commands/encode.js';
import { infoCommand, infoUsage } from './commands/info.js';
import { convertCommand, convertUsage } from './commands/convert.js';
import { trainCommand, trainUsage } from './commands/train.js';
import { activationsCommand, activationsUsage } from './commands/activations.js';
import { evalCommand, evalUsage } from './commands/eval.js';
import { featuresCommand, featuresUsage } from './commands/features.js';
import { generateCommand, generateUsage } from './commands/generate.js';
import { genModelCommand, genModelUsage } from './commands/genModel.js';
import { analyzeCommand, analyzeUsage } from './commands/analyze.js';
import { listCommand, listUsage, pullCommand, pullUsage } from './commands/pull.js';
import { dashboardCommand, dashboardUsage } from './commands/dashboard.js';
import { featureCommand, featureUsage } from './commands/feature.js';
import { serveCommand, serveUsage } from './commands/serve.js';

const commands: Record<string, { run: (argv: string[]) => Promise<number>; usage: string; what: string }> = {
  demo: { run: demoCommand, usage: demoUsage, what: 'train an SAE on data with known features, then encode + decode a GPT-2-sized dump' },
  train: { run: trainCommand, usage: trainUsage, what: 'train a TopK SAE on activation files; saves a SAELens directory' },
  encode: { run: encodeCommand, usage: encodeUsage, what: 'encode an activation dump (.npy/.safetensors) into sparse codes' },
  decode: { run: decodeCommand, usage: decodeUsage, what: 'decode sparse codes into reconstructed activations (.npy)' },
  activations: { run: activationsCommand, usage: activationsUsage, what: "run a corpus through a language model (ONNX) and dump one hook's activations" },
  features: { run: featuresCommand, usage: featuresUsage, what: 'per token of a text, the SAE features that fire most' },
  eval: { run: evalCommand, usage: evalUsage, what: 'splice the SAE into the model: CE loss recovered, KL, explained variance' },
  generate: { run: generateCommand, usage: generateUsage, what: 'greedy generation, optionally with SAE feature interventions' },
  analyze: { run: analyzeCommand, usage: analyzeUsage, what: 'feature statistics, top contexts and logit effects -> a static HTML dashboard' },
  dashboard: { run: dashboardCommand, usage: dashboardUsage, what: 'serve a dashboard folder on localhost' },
  serve: { run: serveCommand, usage: serveUsage, what: 'an HTTP API on localhost: encode rows, per-token features of a text, dashboard data (batched across clients)' },
  feature: { run: featureCommand, usage: featureUsage, what: "one feature's max-activating contexts, highlighted in the terminal" },
  pull: { run: pullCommand, usage: pullUsage, what: 'download a pretrained SAE release (SAELens names) into the hub cache' },
  list: { run: listCommand, usage: listUsage, what: 'pretrained releases and SAE ids, and which are cached' },
  'gen-model': { run: genModelCommand, usage: genModelUsage, what: 'write a small random GPT-2-architecture ONNX model with the GPT-2 tokenizer' },
  info: { run: infoCommand, usage: infoUsage, what: "print an SAE directory's config as JSON" },
  convert: { run: convertCommand, usage: convertUsage, what: 'write a sparsify / Gemma Scope / SAELens folder as a SAELens directory (schema-checked)' },
  doctor: { run: doctorCommand, usage: doctorUsage, what: 'show backends, CPU kernel variant, threads, CUDA device' },
};

export function usage(): string {
  const lines = ['usage: saekit <command> [flags]', ''];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(11)} ${c.what}`, `           ${c.usage}`);
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  // --verbose (any command): a failure also prints its stack, as SAEKIT_DEBUG=1 does.
  const verbose = args.includes('--verbose');
  const rest = args.filter((a) => a !== '--verbose');
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    process.stdout.write(`${saekitVersion()}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`saekit: unknown command '${name}'\n${usage()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${command.usage}\n`);
    return 0;
  }
  // Ctrl-C: one line and exit 130. Outputs are written under temporary names and renamed when
  // complete, so a rerun of the same command finishes the job (and removes the temporaries).
  // train, dashboard and serve handle SIGINT themselves (a checkpoint; closing the server).
  const onSigint = () => {
    process.stderr.write(`saekit ${name}: interrupted (SIGINT); rerun the same command to finish\n`);
    process.exit(130);
  };
  const ownHandler = name === 'train' || name === 'dashboard' || name === 'serve';
  if (!ownHandler) process.on('SIGINT', onSigint);
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`saekit ${name}: ${e.message}\nusage: ${command.usage}\n`);
      return 2;
    }
    const message = e instanceof SaekitError ? e.message : `${(e as Error)?.message ?? e}`;
    process.stderr.write(`saekit ${name}: ${message.split('\n')[0]}\n`);
    if ((verbose || (process.env.SAEKIT_DEBUG ?? '') !== '') && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return 1;
  } finally {
    if (!ownHandler) process.off('SIGINT', onSigint);
  }
}
