// Per token of a text, the SAE features that fire most at the SAE's hook: what `saekit features`
// prints and what `saekit serve`'s POST /activations returns. One function so the two agree.
import type { SparseCodes } from '../codes.js';
import { padBatch } from '../model/corpus.js';
import type { LanguageModel } from '../model/languageModel.js';
import type { Sae } from '../sae.js';

export interface TokenFeatures {
  position: number;
  token: number;
  text: string;
  /** The row's nonzero latents, largest value first (ties: smaller id first), at most `top`. */
  features: { id: number; value: number }[];
}

export interface TokenFeaturesOptions {
  /** Features kept per token (default 5). */
  top?: number;
  /** Prepend the tokenizer's BOS (when it has one); default true, as SAELens' prepend_bos. */
  prependBos?: boolean;
  /**
   * How the hook's rows [tokens, d_in] become codes; default sae.encode. The server passes its
   * batcher here so /activations shares the encode queue with /encode.
   */
  encode?: (rows: Float32Array) => Promise<SparseCodes>;
}

export interface TokenFeaturesResult {
  tokens: TokenFeatures[];
  /** The text's token count (BOS included) when it exceeded the model's positions and was cut to them. */
  truncatedFrom?: number;
}

/** Tokenizes TEXT, runs MODEL to HOOK, encodes every position and keeps each one's top features. */
export async function tokenFeatures(
  model: LanguageModel,
  sae: Sae,
  hook: string,
  text: string,
  opts: TokenFeaturesOptions = {},
): Promise<TokenFeaturesResult> {
  const top = opts.top ?? 5;
  const bos = (opts.prependBos ?? true) && model.tokenizer.bosId !== undefined ? [model.tokenizer.bosId] : [];
  let ids = [...bos, ...model.tokenizer.encode(text)];
  let truncatedFrom: number | undefined;
  const limit = model.maxPositions;
  if (limit !== undefined && ids.length > limit) {
    truncatedFrom = ids.length;
    ids = ids.slice(0, limit);
  }
  const { hooks } = await model.forward(padBatch([ids], 0), { hooks: [hook] });
  const rows = hooks.get(hook)!;
  const codes = await (opts.encode ? opts.encode(rows) : sae.encode(rows));
  const tokens: TokenFeatures[] = ids.map((token, p) => {
    const feats: { id: number; value: number }[] = [];
    for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) feats.push({ id: codes.indices[i]!, value: codes.values[i]! });
    feats.sort((a, b) => b.value - a.value || a.id - b.id);
    return { position: p, token, text: model.tokenText(token), features: feats.slice(0, top) };
  });
  return truncatedFrom !== undefined ? { tokens, truncatedFrom } : { tokens };
}
