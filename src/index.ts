// saekit's public API.
export { Sae, createSae, loadSae, validateWeights, type LoadOptions } from './sae.js';
export type { ScreenStats } from './addon.js';
export { type SparseCodes, validateCodes, codesRow } from './codes.js';
export { backends, threads, setThreads, cpuVariant, setCpuVariant, resolveDevice, type Device, type BackendInfo, type CpuVariantName } from './system.js';
export { SaekitError, FormatError, ValidationError, NonFiniteInputError, UsageError, NativeError } from './errors.js';
export { syntheticSae, syntheticActivations, Rng } from './synthetic.js';
export type { Architecture, Normalization, SaeConfig, SaeFormat, SaeWeights } from './types.js';
export * from './formats/index.js';
export { SaeTrainer, defaultTrainerConfig, type TrainArchitecture, type TrainerConfig, type TrainParams, type StepMetrics, type TrainerState } from './train/trainer.js';
export { train, type TrainJobOptions, type TrainResult, type TrainProgress, type MetricsRecord } from './train/train.js';
export { initParams, geometricMedian, expectedAverageScale, type BDecInit } from './train/init.js';
export { learningRate, type LrSchedule, type DecayKind } from './train/schedule.js';
export { openRowSource, rowSourceFromIterable, BatchStream, type RowSource, type BatchStreamOptions } from './train/data.js';
export { GroundTruth, featureRecovery, writeGroundTruthNpy, type GroundTruthOptions } from './train/groundTruth.js';
export { saveCheckpoint, loadCheckpoint, type CheckpointMeta } from './train/checkpoint.js';
