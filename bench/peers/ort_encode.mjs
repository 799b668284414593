// The onnxruntime-node peer of bench/peers.js: `node ort_encode.mjs DIR acts.npy K THREADS`.
// Reads W_enc/b_enc/b_dec .npy from DIR, builds the graph
//   TopK(Relu(MatMul(x - b_dec, W_enc) + b_enc), K)
// (onnx-proto), runs it over the activations in 4096-row chunks and turns each chunk into CSR
// codes (zeros dropped, latents ascending) as saekit writes them; prints the first 64 rows'
// latent sets as JSON for the overlap check. The codes are kept in memory, not written: the
// peer is given the benefit of the doubt on output I/O.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
const require = createRequire(join(process.cwd(), 'package.json'));
const ort = require('onnxruntime-node');
const { onnx } = require('onnx-proto');

const [dir, input, kArg, tArg] = process.argv.slice(2);
const k = Number(kArg);
function npy(path) {
  const b = readFileSync(path);
  const len = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + len).toString('latin1');
  const shape = /'shape': \(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + 10 + len, b.byteOffset + b.length));
  return { shape, data };
}
const W = npy(join(dir, 'W_enc.npy')), be = npy(join(dir, 'b_enc.npy')), bd = npy(join(dir, 'b_dec.npy'));
const [dIn, dSae] = W.shape;
const T = onnx.TensorProto.DataType;
const init = (name, dims, data) => onnx.TensorProto.create({ name, dims, dataType: T.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
const kTensor = onnx.TensorProto.create({ name: 'k', dims: [1], dataType: T.INT64, rawData: new Uint8Array(new BigInt64Array([BigInt(k)]).buffer) });
const vi = (name, type, dims) => onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: type, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } } });
const node = (op, inputs, outputs) => onnx.NodeProto.create({ opType: op, input: inputs, output: outputs });
const graph = onnx.GraphProto.create({
  name: 'sae_encode',
  node: [node('Sub', ['x', 'b_dec'], ['xc']), node('MatMul', ['xc', 'W_enc'], ['pre0']), node('Add', ['pre0', 'b_enc'], ['pre']), node('Relu', ['pre'], ['act']), node('TopK', ['act', 'k'], ['values', 'indices'])],
  initializer: [init('W_enc', [dIn, dSae], W.data), init('b_enc', [dSae], be.data), init('b_dec', [dIn], bd.data), kTensor],
  input: [vi('x', T.FLOAT, ['n', dIn])],
  output: [vi('values', T.FLOAT, ['n', k]), vi('indices', T.INT64, ['n', k])],
});
const model = onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph })).finish();
const session = await ort.InferenceSession.create(model, { intraOpNumThreads: Number(tArg), interOpNumThreads: 1, graphOptimizationLevel: 'all' });
const x = npy(input);
const rows = x.shape[0];
const chunk = 4096;
const firstRows = [];
let nnz = 0;
for (let r0 = 0; r0 < rows; r0 += chunk) {
  const n = Math.min(chunk, rows - r0);
  const out = await session.run({ x: new ort.Tensor('float32', x.data.subarray(r0 * dIn, (r0 + n) * dIn), [n, dIn]) });
  const v = out.values.data, ix = out.indices.data;
  const indptr = new Uint32Array(n + 1), idx = new Int32Array(n * k), val = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    const pairs = [];
    for (let j = 0; j < k; j++) if (v[r * k + j] > 0) pairs.push([Number(ix[r * k + j]), v[r * k + j]]);
    pairs.sort((a, b) => a[0] - b[0]);
    let e = indptr[r];
    for (const [j, value] of pairs) (idx[e] = j), (val[e] = value), e++;
    indptr[r + 1] = e;
    nnz += pairs.length;
    if (r0 + r < 64) firstRows.push(pairs.map((p) => p[0]));
  }
}
process.stdout.write(JSON.stringify({ rows, nnz, firstRows }));
