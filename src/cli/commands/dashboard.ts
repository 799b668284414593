// `saekit dashboard`: serves a dashboard folder (from `saekit analyze`) on localhost. With
// --serve URL (alias --api) the feature pages read their documents from a running `saekit serve`
// (GET /features/:id) instead of the folder's data files.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serveDashboard } from '../../analysis/dashboard.js';
import { FormatError, UsageError } from '../../errors.js';
import { num, parse } from '../args.js';

export const dashboardUsage = 'saekit dashboard DASHDIR [--port 8080] [--host 127.0.0.1] [--serve URL]';

export async function dashboardCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { port: { type: 'string' }, host: { type: 'string' }, serve: { type: 'string' }, api: { type: 'string' } }, true);
  if (positionals.length !== 1) throw new UsageError('give the dashboard folder (the --output of saekit analyze)');
  const dir = positionals[0]!;
  if (!existsSync(join(dir, 'index.html'))) throw new FormatError(dir, 'not a dashboard folder (no index.html): run saekit analyze first');
  if (values.serve !== undefined && values.api !== undefined) throw new UsageError('give --serve URL or --api URL (the same flag), not both');
  const api = (values.serve ?? values.api) as string | undefined;
  if (api !== undefined) {
    if (!/^https?:\/\/./.test(api)) throw new UsageError(`--serve must be the http(s) URL of a saekit serve but got '${api}'`);
    if (!readFileSync(join(dir, 'feature.html'), 'utf8').includes('assets/api.js'))
      throw new FormatError(dir, 'was written before --serve existed (feature.html loads no assets/api.js): rerun saekit analyze');
  }
  const server = await serveDashboard(dir, { port: num(values, 'port', 'int') ?? 8080, ...(values.host !== undefined && { host: values.host as string }), ...(api !== undefined && { api }) });
  process.stdout.write(`serving ${dir} at ${server.url}${api !== undefined ? `, feature data from ${api}` : ''} (Ctrl-C stops)\n`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await server.close();
  return 0;
}
