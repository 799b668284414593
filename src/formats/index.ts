// The file-format layer: SAE directories (SAELens, sparsify, Gemma Scope), safetensors, .npy
// and .npz, and the float16/bfloat16 conversions they need.

export { readSaeDir } from './saeDir.js';
export { readSaeLens, foldDecoderNorms } from './saeLens.js';
export { saveSaeLens, type SaveSaeLensOptions, type SaveDtype } from './saveSaeLens.js';
export {
  checkSaeLensCfg,
  checkSaeLensDir,
  saeLensCfgErrors,
  saeLensTensorErrors,
  SAELENS_ARCHITECTURES,
  SAELENS_SCHEMA_SOURCE,
  type SaeLensArchitectureSpec,
  type SaeLensCfgReport,
  type CheckSaeLensCfgOptions,
} from './saeLensCfgSchema.js';
export { convertToSaeLens, type ConvertOptions, type ConvertResult } from './convert.js';
export { readSparsify } from './sparsify.js';
export { readGemmaScope } from './gemmaScope.js';
export { readGemmaScope2 } from './gemmaScope2.js';
// Published transcoders (SAELens conversion functions gemma_2_transcoder, mwhanna_transcoder, mntss_clt_layer_transcoder).
export { readGemmaScopeTranscoder, type GemmaScopeTranscoderOptions } from './gemmaScopeTranscoder.js';
export { readMwhannaTranscoder, type MwhannaFiles } from './mwhannaTranscoder.js';
export { readCltLayer, type CltLayerFiles } from './cltLayer.js';
export { cltDecoder, type CltTarget, type ReadOptions } from './cltDecoder.js';

export {
  SafetensorsReader,
  isSafetensorsDtype,
  type SafetensorsDtype,
  type SafetensorsTensorInfo,
} from './safetensors.js';
export {
  writeSafetensors,
  SafetensorsStreamWriter,
  type SafetensorsTensorSpec,
  type SafetensorsTensorData,
} from './safetensorsWriter.js';

export { NpyReader, parseNpy, writeNpy, encodeNpy, encodeNpyHeader, type NpyDtype, type NpyHeader, type NpyWriteDtype } from './npy.js';
export { readNpz, writeNpz, type NpzArray, type NpzArrayRead } from './npz.js';

export {
  f32BitsToF16Bits,
  f32BitsToBf16Bits,
  f16ToF32Array,
  bf16ToF32Array,
  f32ToF16Array,
  f32ToBf16Array,
} from './float16.js';
export type { ElementArray, ElementKind } from './elements.js';
