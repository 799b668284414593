// `saekit dashboard`: serves a dashboard folder (from `saekit analyze`) on localhost.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { serveDashboard } from '../../analysis/dashboard.js';
import { FormatError, UsageError } from '../../errors.js';
import { num, parse } from '../args.js';

export const dashboardUsage = 'saekit dashboard DASHDIR [--port 8080] [--host 127.0.0.1]';

export async function dashboardCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { port: { type: 'string' }, host: { type: 'string' } }, true);
  if (positionals.length !== 1) throw new UsageError('give the dashboard folder (the --output of saekit analyze)');
  const dir = positionals[0]!;
  if (!existsSync(join(dir, 'index.html'))) throw new FormatError(dir, 'not a dashboard folder (no index.html): run saekit analyze first');
  const server = await serveDashboard(dir, { port: num(values, 'port', 'int') ?? 8080, ...(values.host !== undefined && { host: values.host as string }) });
  process.stdout.write(`serving ${dir} at ${server.url} (Ctrl-C stops)\n`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await server.close();
  return 0;
}
