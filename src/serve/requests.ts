// Request bodies of `saekit serve` -> checked float32 rows, and its JSON errors. Every check
// happens here, per request, before the rows join a batch: one bad row must get its own client
// a 400, not fail the batched encode for everyone else.
import { firstNonFinite } from '../formats/saeTensors.js';

/** An error the server answers with STATUS and `{error: {code, message}}`. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The JSON encode body: `{rows: number[][]}` or `{data: number[], rows: N, d_in: D}` (row-major). */
export interface EncodeJsonBody {
  rows: unknown;
  data?: unknown;
  d_in?: unknown;
}

function tooManyRows(rows: number, maxRows: number): ApiError {
  return new ApiError(413, 'too_many_rows', `the request has ${rows} rows but this server takes at most ${maxRows} per request (maxRowsPerRequest); split it`);
}

/** Rows of a JSON encode body as float32 [rows, dIn]. */
export function rowsFromJson(body: EncodeJsonBody, dIn: number, maxRows: number): Float32Array {
  if (Array.isArray(body.rows)) {
    if (body.data !== undefined || body.d_in !== undefined)
      throw new ApiError(400, 'bad_request', 'give rows as an array of arrays, or data with rows and d_in, not both');
    const rows = body.rows as unknown[];
    if (rows.length > maxRows) throw tooManyRows(rows.length, maxRows);
    const x = new Float32Array(rows.length * dIn);
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r];
      if (!Array.isArray(row)) throw new ApiError(400, 'bad_request', `rows[${r}] is not an array of numbers`);
      if (row.length !== dIn) throw new ApiError(400, 'bad_width', `rows[${r}] has ${row.length} values but this SAE has d_in ${dIn}`);
      const o = r * dIn;
      for (let c = 0; c < dIn; c++) {
        const v = row[c];
        if (typeof v !== 'number') throw new ApiError(400, 'bad_request', `rows[${r}][${c}] is ${v === null ? 'null' : typeof v}, not a number`);
        x[o + c] = v;
      }
    }
    checkFinite(x, dIn, (i) => (rows[Math.floor(i / dIn)] as number[])[i % dIn]);
    return x;
  }
  const n = body.rows;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
    throw new ApiError(400, 'bad_request', 'rows must be an array of rows, or (with data and d_in) a row count');
  if (n > maxRows) throw tooManyRows(n, maxRows);
  if (body.d_in !== dIn) throw new ApiError(400, 'bad_width', `d_in is ${JSON.stringify(body.d_in)} but this SAE has d_in ${dIn}`);
  const data = body.data;
  if (!Array.isArray(data)) throw new ApiError(400, 'bad_request', 'data must be an array of numbers (rows * d_in, row-major)');
  if (data.length !== n * dIn)
    throw new ApiError(400, 'bad_width', `data has ${data.length} values but rows * d_in = ${n} * ${dIn} = ${n * dIn}`);
  const x = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (typeof v !== 'number') throw new ApiError(400, 'bad_request', `data[${i}] is ${v === null ? 'null' : typeof v}, not a number`);
    x[i] = v;
  }
  checkFinite(x, dIn, (i) => data[i]);
  return x;
}

/** Rows of a raw little-endian float32 body; ROWS is the `rows` query parameter as sent. */
export function rowsFromBinary(body: Buffer, rowsParam: unknown, dIn: number, maxRows: number): Float32Array {
  if (typeof rowsParam !== 'string' || !/^(0|[1-9][0-9]{0,9})$/.test(rowsParam))
    throw new ApiError(400, 'bad_request', `an application/octet-stream body needs ?rows=N (a decimal row count) but got ${rowsParam === undefined ? 'none' : JSON.stringify(rowsParam)}`);
  const n = Number(rowsParam);
  if (n > maxRows) throw tooManyRows(n, maxRows);
  const want = n * dIn * 4;
  if (body.length !== want)
    throw new ApiError(400, 'bad_width', `the body has ${body.length} bytes but rows * d_in * 4 = ${n} * ${dIn} * 4 = ${want} (float32, little-endian)`);
  // A copy: the Buffer may sit at any offset of a shared pool (float32 views need alignment 4),
  // and the rows must outlive the request while they wait for a batch.
  const x = new Float32Array(n * dIn);
  if (LITTLE_ENDIAN) new Uint8Array(x.buffer).set(body);
  else {
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let i = 0; i < x.length; i++) x[i] = view.getFloat32(4 * i, true);
  }
  checkFinite(x, dIn, (i) => x[i]);
  return x;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function checkFinite(x: Float32Array, dIn: number, sent: (i: number) => unknown): void {
  const i = firstNonFinite(x);
  if (i < 0) return;
  const v = sent(i);
  const what = typeof v === 'number' && Number.isFinite(v) ? `${v} (beyond float32's range)` : String(v);
  throw new ApiError(400, 'non_finite', `row ${Math.floor(i / dIn)} column ${i % dIn} is ${what}: values must be finite float32`);
}
