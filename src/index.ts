// saekit's public API.
export { Sae, createSae, loadSae, validateWeights, type LoadOptions } from './sae.js';
export { type SparseCodes, validateCodes, codesRow } from './codes.js';
export { backends, threads, setThreads, cpuVariant, setCpuVariant, resolveDevice, type Device, type BackendInfo, type CpuVariantName } from './system.js';
export { SaekitError, FormatError, ValidationError, NonFiniteInputError, UsageError, NativeError } from './errors.js';
export { syntheticSae, syntheticActivations, Rng } from './synthetic.js';
export type { Architecture, Normalization, SaeConfig, SaeFormat, SaeWeights } from './types.js';
export * from './formats/index.js';
