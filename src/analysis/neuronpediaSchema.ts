// The JSON Schema of one Neuronpedia upload batch (the body of `POST api/feature/upload-batch`),
// as saekit writes it. It lives here, as a TS constant, so it ships in dist/ with the code that
// validates against it; schema/neuronpedia-upload-batch.schema.json is the same document for
// other tools (a test keeps the two identical).
//
// Why draft-07: it is what Ajv's default export compiles without extra meta-schemas.
// Strict where Neuronpedia's own schema rejects a batch: unknown fields, more than 128 features,
// more than 20 logits a side, contexts over 1024 tokens, a feature without activations. What
// JSON Schema cannot say (values as long as tokens, quantileMin <= quantileMax, feature indices
// unique in a batch) is checked in code by validateNeuronpediaBatch (neuronpedia.ts).

/** Ids in Neuronpedia URLs (`gpt2-small`, `6-res-jb`): letters, digits, `.`, `_`, `-`. */
export const NEURONPEDIA_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*$';

export const NEURONPEDIA_UPLOAD_BATCH_SCHEMA: Record<string, unknown> = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Neuronpedia upload batch (api/feature/upload-batch), as saekit writes it',
  type: 'object',
  additionalProperties: false,
  required: ['modelId', 'source', 'features'],
  properties: {
    modelId: { type: 'string', minLength: 1, maxLength: 128, pattern: NEURONPEDIA_ID_PATTERN },
    source: { type: 'string', minLength: 1, maxLength: 128, pattern: NEURONPEDIA_ID_PATTERN },
    features: { type: 'array', minItems: 1, maxItems: 128, items: { $ref: '#/definitions/feature' } },
  },
  definitions: {
    feature: {
      type: 'object',
      additionalProperties: false,
      required: ['index', 'topLogits', 'bottomLogits', 'explanations', 'activations'],
      properties: {
        index: { type: 'integer', minimum: 0 },
        density: { type: 'number', minimum: 0, maximum: 1 },
        topLogits: { type: 'array', maxItems: 20, items: { $ref: '#/definitions/logit' } },
        bottomLogits: { type: 'array', maxItems: 20, items: { $ref: '#/definitions/logit' } },
        explanations: { type: 'array', items: { $ref: '#/definitions/explanation' } },
        activations: { type: 'array', minItems: 1, items: { $ref: '#/definitions/activation' } },
      },
    },
    logit: {
      type: 'object',
      additionalProperties: false,
      required: ['token', 'value'],
      properties: {
        token: { type: 'string' },
        value: { type: 'number' },
      },
    },
    explanation: {
      type: 'object',
      additionalProperties: false,
      required: ['text', 'methodName', 'modelName'],
      properties: {
        text: { type: 'string', minLength: 1 },
        methodName: { type: 'string', minLength: 1 },
        modelName: { type: 'string', minLength: 1 },
      },
    },
    activation: {
      type: 'object',
      additionalProperties: false,
      required: ['tokens', 'values', 'quantileMax', 'quantileMin', 'quantileFraction'],
      properties: {
        tokens: { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'string' } },
        values: { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'number' } },
        quantileMax: { type: 'number' },
        quantileMin: { type: 'number' },
        quantileFraction: { type: 'number', minimum: 0, maximum: 1 },
      },
    },
  },
};
