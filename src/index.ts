// saekit's public API.
export { Sae, createSae, loadSae, validateWeights, type LoadOptions, type CallOptions } from './sae.js';
export { encodeFile, type EncodeFileOptions, type StreamProgress, type StreamResult } from './stream/encodeFile.js';
export { decodeFile, type DecodeFileOptions } from './stream/decodeFile.js';
export type { ScreenStats, ScreenName, CpuVariantInfo, EncodeKernelName, KernelDecision } from './addon.js';
export { type SparseCodes, validateCodes, codesRow } from './codes.js';
export { backends, trainingBackends, resolveTrainingDevice, threads, setThreads, cpuVariant, setCpuVariant, cachedKernelDecisions, resolveDevice, type Device, type BackendInfo, type CpuVariantName } from './system.js';
export { SaekitError, FormatError, ValidationError, NonFiniteInputError, UsageError, NativeError } from './errors.js';
export { syntheticSae, syntheticActivations, Rng } from './synthetic.js';
export type { Architecture, Normalization, SaeConfig, SaeFormat, SaeWeights } from './types.js';
export * from './formats/index.js';
export { SaeTrainer, defaultTrainerConfig, type TrainArchitecture, type TrainerConfig, type TrainParams, type StepMetrics, type TrainerState } from './train/trainer.js';
export { train, trainSweep, type TrainJobOptions, type TrainJobArchitecture, type TrainKind, type TrainResult, type TrainProgress, type MetricsRecord } from './train/train.js';
export { initParams, geometricMedian, expectedAverageScale, type BDecInit } from './train/init.js';
export { learningRate, type LrSchedule, type DecayKind } from './train/schedule.js';
export { resampleDeadLatents, type ResampleOptions, type ResampleResult } from './train/resample.js';
export { openRowSource, rowSourceFromIterable, zipRowSources, BatchStream, type RowSource, type BatchStreamOptions } from './train/data.js';
export { GroundTruth, TranscoderGroundTruth, featureRecovery, writeGroundTruthNpy, type GroundTruthOptions, type TranscoderGroundTruthOptions } from './train/groundTruth.js';
export { saveCheckpoint, loadCheckpoint, type CheckpointMeta } from './train/checkpoint.js';
// The model side (needs the optional peer dependency @huggingface/transformers at run time).
export { LanguageModel, loadTransformers, type LanguageModelOptions, type TokenBatch, type ForwardResult } from './model/languageModel.js';
export { resolveModelDir, type ModelSourceOptions } from './model/modelSource.js';
export { findHooks, editGraph, parseHookName, hookSuffix, HOOK_KINDS, type HookKind, type HookPoint, type GraphEdit } from './model/onnxGraph.js';
export { dumpActivations, readActivationsManifest, type ActivationsManifest, type DumpActivationsOptions, type DumpResult } from './model/activations.js';
export { evaluateSpliced, generate, intervene, editCodes, parseIntervention, transcoderOutputHook, type Intervention, type SplicedMetrics, type SplicedEvalOptions, type GenerateOptions } from './model/splice.js';
export { readCorpus, tokenWindows, batches, padBatch, wrapTokenizer, type TextTokenizer } from './model/corpus.js';
export { gpt2TokenizerFiles } from './model/gpt2Tokenizer.js';
export { writeTinyGpt2, makeGpt2Weights, gpt2OnnxBytes, gpt2HfConfig, type TinyGpt2Options, type Gpt2Weights } from './model/tinyGpt2.js';
export { syntheticText } from './model/syntheticText.js';
// Feature interpretation: statistics, logit effects, dashboards.
export { FeatureStats, type FeatureStatsOptions, type StoredExample } from './analysis/featureStats.js';
export { analyzeFeatures, featureDoc, featureSummary, dashboardIndex, type AnalysisSource, type AnalysisResult, type DocOptions } from './analysis/analyze.js';
export { readUnembedding, logitEffects, type Unembedding, type LogitEffects } from './analysis/logitEffects.js';
export { writeDashboard, serveDashboard } from './analysis/dashboard.js';
export { tokenFeatures, type TokenFeatures, type TokenFeaturesOptions, type TokenFeaturesResult } from './analysis/tokenFeatures.js';
// saekit serve: the HTTP API (fastify, loaded on first createSaeServer) and its encode batcher.
export { createSaeServer, codesJson, type SaeServer, type SaeServerOptions } from './serve/server.js';
export { EncodeBatcher, sliceRows, type BatcherOptions, type BatcherStats } from './serve/batcher.js';
export {
  neuronpediaFeature,
  writeNeuronpediaExport,
  readNeuronpediaExport,
  validateNeuronpediaBatch,
  NeuronpediaExportWriter,
  defaultNeuronpediaModelId,
  defaultNeuronpediaSource,
  NEURONPEDIA_MAX_FEATURES,
  NEURONPEDIA_MAX_LOGITS,
  NEURONPEDIA_MAX_TOKENS,
  type NeuronpediaBatch,
  type NeuronpediaFeature,
  type NeuronpediaActivation,
  type NeuronpediaLogit,
  type NeuronpediaManifest,
  type NeuronpediaExportOptions,
} from './analysis/neuronpedia.js';
export { NEURONPEDIA_UPLOAD_BATCH_SCHEMA } from './analysis/neuronpediaSchema.js';
export type { FeatureDoc, FeatureActivation, FeatureSummary, DashboardIndex } from './analysis/types.js';
// Pretrained SAEs and the Hugging Face hub cache.
export { hubFile, hubListFiles, hubCacheDir, type HubOptions } from './hub/hub.js';
export { releases, findSae, isRelease, userRegistryPath, type ReleaseEntry, type ReleaseSae, type ReleaseFormat } from './hub/registry.js';
export { pullSae, loadPretrainedSae, readPretrainedWeights, type PullOptions, type PulledSae } from './hub/pretrained.js';
export type { PretrainedOptions } from './sae.js';
