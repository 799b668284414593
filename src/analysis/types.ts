// The documents a feature analysis produces: one per feature (fields named as Neuronpedia's
// exports name them, so a dashboard can be compared or uploaded), and an index over all.

/** One context: the tokens around an activating token and the feature's value at each. */
export interface FeatureActivation {
  /** Token strings of the context window (decoded one token at a time). */
  tokens: string[];
  /** The feature's activation at each token (0 where it does not fire). */
  values: number[];
  /** Token ids of the context. */
  tokenIds: number[];
  maxValue: number;
  /** Index into tokens of the activating token this example was chosen for. */
  maxValueTokenIndex: number;
  /** 'top' for the max-activating examples, else the quantile bin, e.g. 'quantile 2 of 5'. */
  bin: string;
  /** Global row (token) number in the analysed stream, for tracing back to a dump. */
  row: number;
}

export interface FeatureDoc {
  /** Model name or path and the hook, as Neuronpedia's modelId / layer. */
  modelId: string;
  layer: string;
  /** Latent index. */
  index: number;
  /** Tokens on which the feature fired / tokens analysed. */
  frac_nonzero: number;
  /** log10(frac_nonzero + 1e-10), SAELens' sparsity convention. */
  log10_density: number;
  count: number;
  tokens_seen: number;
  max_act: number;
  /** Mean over the tokens where it fired. */
  mean_act: number;
  /** Histogram of nonzero activations: bar heights (counts) and bar centers (values). */
  freq_hist_data_bar_heights: number[];
  freq_hist_data_bar_values: number[];
  /** Histogram of the logit effects W_dec[f] @ W_U over the vocabulary (empty without a model). */
  logits_hist_data_bar_heights: number[];
  logits_hist_data_bar_values: number[];
  /** Tokens the feature pushes up most / down most, with their logit effects. */
  pos_str: string[];
  pos_values: number[];
  neg_str: string[];
  neg_values: number[];
  /** Max-activating contexts first (bin 'top', descending maxValue), then quantile samples. */
  activations: FeatureActivation[];
}

/** One row of the dashboard's index. */
export interface FeatureSummary {
  id: number;
  frac_nonzero: number;
  max_act: number;
  mean_act: number;
  /** The activating token of the top example ('' for a dead feature). */
  top_token: string;
  /** The first few tokens the feature promotes (logit effects). */
  pos_str: string[];
}

export interface DashboardIndex {
  model: string;
  hook: string;
  sae: string;
  d_sae: number;
  tokens_seen: number;
  /** ISO time the analysis finished. */
  created: string;
  /**
   * What was asked for (`saekit analyze` records its flags): a rerun of the same command finds
   * the finished dashboard and does nothing.
   */
  request?: Record<string, unknown>;
  features: FeatureSummary[];
}
