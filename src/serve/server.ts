// `saekit serve`: a small HTTP API (fastify) for tools that embed saekit.
//
//   GET  /health          {status: 'ok'}
//   GET  /info            the SAE's config, the model and hook, saekit's version, limits, batching counters
//   POST /encode          rows -> sparse codes {rows, d_sae, indptr, indices, values}; JSON
//                         {rows: number[][]} or {data, rows, d_in}, or raw little-endian float32
//                         (application/octet-stream) with ?rows=N
//   POST /activations     {text, top?} -> per token its top features (needs a model)
//   GET  /features/:id    the dashboard's feature document (features/<id>.json of a dashboard folder)
//
// Why it looks like this:
// - Encodes from every client go through one EncodeBatcher (batcher.ts): one native call at a
//   time takes everything queued, so throughput under concurrent load approaches the batch
//   encode's instead of paying a call's fixed cost per request.
// - Every request is checked on its own before it joins a batch (requests.ts), and every error
//   is JSON {error: {code, message}} with a 4xx status: fastify's own errors (bad JSON, body too
//   large, wrong media type, schema) are mapped in one error handler.
// - Bounded: bodyLimit (413), rows per request (413), rows per encode call, requests in flight
//   (503 with Retry-After beyond maxConcurrent), text length and top for /activations.
// - Binds to 127.0.0.1 unless told otherwise: the API has no authentication.
// - GET answers carry Access-Control-Allow-Origin (default '*', corsOrigin: null for none) so a
//   dashboard page served elsewhere (saekit dashboard --serve URL) can read /features/:id. POSTs
//   get no CORS header and OPTIONS is refused: a web page cannot drive the encoder.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { tokenFeatures } from '../analysis/tokenFeatures.js';
import type { SparseCodes } from '../codes.js';
import { FormatError, SaekitError, ValidationError, expected } from '../errors.js';
import type { LanguageModel } from '../model/languageModel.js';
import type { Sae } from '../sae.js';
import { saekitVersion } from '../system.js';
import { EncodeBatcher, type BatcherStats } from './batcher.js';
import { ApiError, rowsFromBinary, rowsFromJson, type EncodeJsonBody } from './requests.js';

export interface SaeServerOptions {
  sae: Sae;
  /** A language model for POST /activations (without one it answers 501). */
  model?: LanguageModel;
  /** The hook the SAE reads (default the SAE's cfg hook_name); needed with a model. */
  hook?: string;
  /** Prepend BOS in /activations (default true, SAELens' prepend_bos). */
  prependBos?: boolean;
  /** A dashboard folder (saekit analyze --output) for GET /features/:id. */
  dashboardDir?: string;
  /** Names shown by /info (default: the SAE's cfg, the model's name). */
  saeLabel?: string;
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
  /** Largest request body in bytes (default 16 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** Most rows one /encode request may send (default 1024); more gets 413. */
  maxRowsPerRequest?: number;
  /** Most rows one batched encode call takes (default 4096; at least maxRowsPerRequest). */
  maxBatchRows?: number;
  /** Requests in flight at once (default 256); beyond it 503 with Retry-After. /health is exempt. */
  maxConcurrent?: number;
  /** How long an idle batcher waits for more requests, ms (default 1). */
  batchWindowMs?: number;
  /** Longest /activations text in characters (default 20000). */
  maxTextChars?: number;
  /** Access-Control-Allow-Origin on GET answers (default '*'; null sends none). */
  corsOrigin?: string | null;
}

export interface SaeServer {
  /** Base URL, ending in '/'. */
  url: string;
  /** The batcher's counters (encode calls, requests, rows, largest merge). */
  stats(): BatcherStats;
  /** Stops listening; requests in flight finish first. Does not dispose the SAE or model. */
  close(): Promise<void>;
}

const MAX_TOP = 1000;

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  const n = v ?? fallback;
  if (!Number.isSafeInteger(n) || n < 1) throw expected('a positive integer', `options.${name}`, v);
  return n;
}

/** Starts the server; resolves once it listens. */
export async function createSaeServer(opts: SaeServerOptions): Promise<SaeServer> {
  const { sae, model } = opts;
  if (sae === null || typeof sae !== 'object' || typeof sae.encode !== 'function') throw expected('a Sae', 'options.sae', sae);
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 0;
  if (typeof host !== 'string' || host === '') throw expected('a host name or address', 'options.host', host);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw expected('an integer port in 0..65535', 'options.port', port);
  const maxBodyBytes = positiveInt(opts.maxBodyBytes, 16 * 1024 * 1024, 'maxBodyBytes');
  const maxRowsPerRequest = positiveInt(opts.maxRowsPerRequest, 1024, 'maxRowsPerRequest');
  const maxBatchRows = positiveInt(opts.maxBatchRows, Math.max(4096, maxRowsPerRequest), 'maxBatchRows');
  if (maxBatchRows < maxRowsPerRequest)
    throw new ValidationError(`maxBatchRows (${maxBatchRows}) must be at least maxRowsPerRequest (${maxRowsPerRequest})`);
  const maxConcurrent = positiveInt(opts.maxConcurrent, 256, 'maxConcurrent');
  const maxTextChars = positiveInt(opts.maxTextChars, 20000, 'maxTextChars');
  const corsOrigin = opts.corsOrigin === undefined ? '*' : opts.corsOrigin;
  if (corsOrigin !== null && (typeof corsOrigin !== 'string' || corsOrigin === '')) throw expected("an origin, '*' or null", 'options.corsOrigin', corsOrigin);
  const hook = opts.hook ?? sae.config.hookName;
  if (model) {
    if (!hook) throw new ValidationError('the SAE names no hook (cfg.json metadata.hook_name): give options.hook to run a model');
    model.checkHook(hook);
    if (sae.dIn !== model.dModel) throw new ValidationError(`the SAE has d_in ${sae.dIn} but ${hook} of ${model.name} has width ${model.dModel}`);
  }
  const dashboardDir = opts.dashboardDir;
  if (dashboardDir !== undefined) await checkDashboard(dashboardDir, sae.dSae);
  const batcher = new EncodeBatcher(sae, { maxBatchRows, ...(opts.batchWindowMs !== undefined && { batchWindowMs: opts.batchWindowMs }) });
  const dIn = sae.dIn;

  // Loaded here, not at import: `import 'saekit'` should not pay for the HTTP stack.
  const { fastify } = await import('fastify');
  const app = fastify({
    bodyLimit: maxBodyBytes,
    // No coercion ("1" -> 1, null -> 0 would slip through) and unknown keys are refused, not dropped.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false, allowUnionTypes: true } },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  app.removeContentTypeParser('text/plain'); // JSON or raw float32 only: anything else is 415
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  // Requests in flight, counted from arrival to the response's end (or the client going away).
  let inFlight = 0;
  app.addHook('onRequest', (req, reply, done) => {
    if (req.url === '/health') return done();
    if (inFlight >= maxConcurrent) {
      reply.header('Retry-After', '1');
      return done(new ApiError(503, 'overloaded', `this server is already answering ${maxConcurrent} requests (maxConcurrent); retry later`));
    }
    inFlight++;
    reply.raw.once('close', () => inFlight--);
    done();
  });
  app.addHook('onSend', (req, reply, payload, done) => {
    if (corsOrigin !== null && (req.method === 'GET' || req.method === 'HEAD')) {
      reply.header('Access-Control-Allow-Origin', corsOrigin);
      if (corsOrigin !== '*') reply.header('Vary', 'Origin');
    }
    reply.header('X-Content-Type-Options', 'nosniff');
    done(null, payload);
  });

  app.setErrorHandler((err: FastifyError | ApiError | Error, _req, reply) => {
    const e = toApiError(err, maxBodyBytes);
    void reply.code(e.status).type('application/json; charset=utf-8').send({ error: { code: e.code, message: e.message } });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  // Known paths answer 405 (with Allow) to the other methods, not 404.
  const routes: Record<string, string[]> = { '/health': ['GET', 'HEAD'], '/info': ['GET', 'HEAD'], '/encode': ['POST'], '/activations': ['POST'], '/features/:id': ['GET', 'HEAD'] };
  for (const [url, allowed] of Object.entries(routes)) {
    const others = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'].filter((m) => !allowed.includes(m));
    app.route({
      method: others,
      url,
      handler: (req, reply) => {
        void reply.header('Allow', allowed.join(', '));
        throw new ApiError(405, 'method_not_allowed', `${req.method} is not allowed on ${url}; use ${allowed.join(' or ')}`);
      },
    });
  }

  app.get('/health', async () => ({ status: 'ok' }));

  const info = () => ({
    saekit: saekitVersion(),
    sae: {
      ...(opts.saeLabel !== undefined && { label: opts.saeLabel }),
      architecture: sae.config.architecture,
      d_in: sae.dIn,
      d_sae: sae.dSae,
      d_out: sae.dOut,
      k: sae.config.k ?? null,
      normalize_activations: sae.config.normalizeActivations,
      hook: sae.config.hookName ?? null,
      device: sae.device,
    },
    model: model ? { name: model.name, d_model: model.dModel } : null,
    hook: hook ?? null,
    dashboard: dashboardDir !== undefined,
    limits: { max_body_bytes: maxBodyBytes, max_rows_per_request: maxRowsPerRequest, max_batch_rows: maxBatchRows, max_concurrent: maxConcurrent, max_text_chars: maxTextChars, max_top: MAX_TOP },
    batching: { batch_window_ms: batcher.batchWindowMs, max_batch_rows: maxBatchRows, ...batcher.stats },
  });
  app.get('/info', async () => info());

  const encodeSchema = {
    type: 'object',
    additionalProperties: false,
    required: ['rows'],
    properties: { rows: { type: ['array', 'integer'] }, data: { type: 'array' }, d_in: { type: 'integer' } },
  };
  app.post(
    '/encode',
    { schema: { body: { content: { 'application/json': { schema: encodeSchema } } } } },
    async (req: FastifyRequest<{ Querystring: Record<string, unknown> }>, reply: FastifyReply) => {
      const x = Buffer.isBuffer(req.body)
        ? rowsFromBinary(req.body, req.query.rows, dIn, maxRowsPerRequest)
        : rowsFromJson(req.body as EncodeJsonBody, dIn, maxRowsPerRequest);
      const codes = x.length === 0 ? emptyCodes(sae.dSae) : await batcher.encode(x);
      return reply.type('application/json; charset=utf-8').send(codesJson(codes));
    },
  );

  // Model forwards run one at a time (ONNX runtime has its own thread pool); their encodes
  // join the shared batcher.
  let modelQueue: Promise<unknown> = Promise.resolve();
  app.post(
    '/activations',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['text'],
          properties: { text: { type: 'string', minLength: 1, maxLength: maxTextChars }, top: { type: 'integer', minimum: 1, maximum: MAX_TOP } },
        },
      },
    },
    async (req: FastifyRequest<{ Body: { text: string; top?: number } }>) => {
      if (!model) throw new ApiError(501, 'no_model', 'this server runs no language model: start saekit serve with --model to use /activations');
      const { text, top = 5 } = req.body;
      const run = modelQueue.then(() =>
        tokenFeatures(model, sae, hook!, text, { top, prependBos: opts.prependBos ?? true, encode: (rows) => batcher.encode(rows) }),
      );
      modelQueue = run.catch(() => undefined);
      const r = await run;
      return { model: model.name, hook, tokens: r.tokens, ...(r.truncatedFrom !== undefined && { truncated_from: r.truncatedFrom }) };
    },
  );

  app.get(
    '/features/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string' } } } } },
    async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const raw = req.params.id;
      if (!/^(0|[1-9][0-9]{0,9})$/.test(raw))
        throw new ApiError(400, 'bad_feature_id', `feature id must be a decimal integer in [0, ${sae.dSae}) but got ${JSON.stringify(raw)}`);
      const id = Number(raw);
      if (id >= sae.dSae) throw new ApiError(404, 'no_such_feature', `feature ${id} is out of range: this SAE has d_sae ${sae.dSae}`);
      if (dashboardDir === undefined)
        throw new ApiError(404, 'no_dashboard', 'this server has no dashboard folder: start saekit serve with --dashboard DASHDIR (saekit analyze --output)');
      let text: string;
      try {
        text = await readFile(join(dashboardDir, 'features', `${id}.json`), 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ApiError(404, 'no_such_feature', `the dashboard has no document for feature ${id}`);
        throw e;
      }
      return reply.type('application/json; charset=utf-8').send(text);
    },
  );

  await app.listen({ host, port });
  const addr = app.server.address() as AddressInfo;
  const shownHost = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return { url: `http://${shownHost}:${addr.port}/`, stats: () => batcher.stats, close: () => app.close() };
}

async function checkDashboard(dir: string, dSae: number): Promise<void> {
  if (!existsSync(join(dir, 'features'))) throw new FormatError(dir, 'not a dashboard folder (no features/): run saekit analyze first');
  let index: { d_sae?: unknown } | undefined;
  try {
    index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { d_sae?: unknown };
  } catch {
    index = undefined;
  }
  if (index === undefined) throw new FormatError(join(dir, 'index.json'), 'missing or not JSON: run saekit analyze first');
  if (index.d_sae !== dSae) throw new ValidationError(`dashboard ${dir} is for d_sae ${String(index.d_sae)} but the SAE served has d_sae ${dSae}`);
}

function emptyCodes(dSae: number): SparseCodes {
  return { rows: 0, dSae, indptr: new Uint32Array(1), indices: new Int32Array(0), values: new Float32Array(0) };
}

/**
 * Codes as JSON text, built directly: JSON.stringify of a typed array gives an object, and
 * copying to plain arrays first costs more than the join. A float32 value's shortest decimal
 * parses back (through Math.fround / a Float32Array) to the same float32.
 */
export function codesJson(c: SparseCodes): string {
  let s = `{"rows":${c.rows},"d_sae":${c.dSae},"indptr":[${c.indptr.join(',')}],"indices":[${c.indices.join(',')}],"values":[${c.values.join(',')}]`;
  if (c.rowScale) s += `,"row_scale":[${c.rowScale.join(',')}]`;
  if (c.rowShift) s += `,"row_shift":[${c.rowShift.join(',')}]`;
  return `${s}}`;
}

/** Any error -> the status, code and message the client gets. */
function toApiError(err: FastifyError | ApiError | Error, maxBodyBytes: number): ApiError {
  if (err instanceof ApiError) return err;
  const f = err as FastifyError;
  if (f.validation) return new ApiError(400, 'bad_request', f.message);
  switch (f.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'body_too_large', `the request body exceeds this server's limit of ${maxBodyBytes} bytes (maxBodyBytes)`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, 'unsupported_media_type', `${f.message}: send application/json, or application/octet-stream to /encode`);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError(400, 'bad_json', f.message);
    default:
  }
  if (err instanceof SyntaxError || f.statusCode === 400 && /JSON/i.test(f.message)) return new ApiError(400, 'bad_json', `the body is not valid JSON: ${f.message}`);
  if (err instanceof ValidationError) return new ApiError(400, 'invalid', err.message);
  if (typeof f.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500) return new ApiError(f.statusCode, 'bad_request', f.message);
  return new ApiError(500, 'internal', err instanceof SaekitError ? err.message : `internal error: ${err.message}`);
}
