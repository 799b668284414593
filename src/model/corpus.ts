// Text corpora for harvesting activations: documents streamed from a file, tokenized, packed into
// fixed-length context windows exactly as SAELens packs them, and grouped into batches.
//
// Memory is bounded by one document (plus one window and one batch), whatever the size of the
// corpus file: files are read line by line with a stream, and the tokens of one document at a
// time are cut into windows.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { createInterface } from 'node:readline';
import { FormatError, ValidationError, describe, expected } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// Reading documents

/** Corpus file kinds readCorpus understands, by extension. */
export const CORPUS_EXTENSIONS = ['.txt', '.jsonl'] as const;

/**
 * Streams the documents of a corpus file.
 *
 * - `.txt`: documents are paragraphs, separated by one or more blank lines (a line that is empty
 *   or holds only whitespace). A paragraph's lines are joined with "\n" (line endings, "\n" or
 *   "\r\n", are not part of the text); leading indentation within a paragraph is kept. A file
 *   without blank lines is therefore ONE document.
 * - `.jsonl`: one JSON object per line; the document is its `textField` (default "text"), which
 *   must be a string. Blank lines are skipped. A line that is not JSON, not an object, or lacks
 *   the string field is a FormatError naming the file and the line number.
 *
 * A UTF-8 byte-order mark at the start of the file is ignored. The file is read with a stream
 * (readline): memory is bounded by the longest document, not the file. A missing file, a
 * directory or an unknown extension is a FormatError naming the path. Breaking out of the loop
 * early closes the file.
 */
export async function* readCorpus(path: string, opts: { textField?: string } = {}): AsyncGenerator<string> {
  if (typeof path !== 'string' || path === '') throw expected('a corpus file path', 'readCorpus', path);
  const textField = opts.textField ?? 'text';
  if (typeof textField !== 'string' || textField === '') throw expected('a non-empty field name', 'textField', opts.textField);
  const ext = extname(path).toLowerCase();
  if (ext !== '.txt' && ext !== '.jsonl') {
    throw new FormatError(
      path,
      `unknown corpus file kind ${ext === '' ? '(no extension)' : JSON.stringify(ext)}: expected ${CORPUS_EXTENSIONS.join(' or ')}`,
    );
  }
  try {
    if (!(await stat(path)).isFile()) throw new FormatError(path, 'not a file');
  } catch (err) {
    if (err instanceof FormatError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(path, code === 'ENOENT' ? 'corpus file not found' : `cannot open: ${(err as Error).message}`);
  }
  if (ext === '.txt') yield* paragraphs(path);
  else yield* jsonlTexts(path, textField);
}

/** Lines of a text file with their 1-based numbers; closes the file when the consumer stops. */
async function* lines(path: string): AsyncGenerator<[line: string, lineNo: number]> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const rl = createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (let line of rl) {
      if (++lineNo === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
      yield [line, lineNo];
    }
  } catch (err) {
    throw err instanceof FormatError ? err : new FormatError(path, `cannot read: ${(err as Error).message}`);
  } finally {
    rl.close();
    input.destroy();
  }
}

const BLANK = /^\s*$/;

async function* paragraphs(path: string): AsyncGenerator<string> {
  let para: string[] = [];
  for await (const [line] of lines(path)) {
    if (BLANK.test(line)) {
      if (para.length > 0) yield para.join('\n');
      para = [];
    } else {
      para.push(line);
    }
  }
  if (para.length > 0) yield para.join('\n');
}

async function* jsonlTexts(path: string, textField: string): AsyncGenerator<string> {
  for await (const [line, lineNo] of lines(path)) {
    if (BLANK.test(line)) continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (err) {
      throw new FormatError(path, `line ${lineNo}: invalid JSON (${(err as Error).message})`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new FormatError(path, `line ${lineNo}: expected a JSON object with a string field "${textField}" but found ${describe(json)}`);
    }
    const text = (json as Record<string, unknown>)[textField];
    if (typeof text !== 'string') {
      throw new FormatError(
        path,
        `line ${lineNo}: ` +
          (Object.hasOwn(json, textField)
            ? `field "${textField}" is ${describe(text)}, not a string`
            : `no field "${textField}" (fields: ${Object.keys(json).slice(0, 8).join(', ') || 'none'}); choose another with textField`),
      );
    }
    yield text;
  }
}

// ---------------------------------------------------------------------------------------------
// Tokenizing

/** The part of a tokenizer the corpus pipeline needs. */
export interface TextTokenizer {
  /** Token ids of `text`, WITHOUT special tokens (no BOS/EOS added). */
  encode(text: string): number[];
  /** The id windows begin with and documents are separated by when prependBos; undefined if none. */
  readonly bosId: number | undefined;
}

interface HfTokenizerLike {
  encode(text: string, opts?: { add_special_tokens?: boolean }): unknown;
  bos_token_id?: unknown;
  eos_token_id?: unknown;
}

const isTokenId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0x7fffffff;

/**
 * Wraps a transformers.js tokenizer (from AutoTokenizer.from_pretrained) as a TextTokenizer.
 * encode() adds no special tokens. bosId is the tokenizer's bos_token_id, or its eos_token_id
 * when it has no BOS: TransformerLens (which SAELens tokenizes with) makes the same fallback,
 * and for GPT-2 style tokenizers BOS and EOS are the same token anyway (<|endoftext|>).
 */
export function wrapTokenizer(tok: unknown): TextTokenizer {
  // transformers.js tokenizers are callable: typeof is 'function', not 'object'.
  if (tok === null || (typeof tok !== 'object' && typeof tok !== 'function') || typeof (tok as HfTokenizerLike).encode !== 'function') {
    throw expected('a tokenizer with an encode() method (transformers.js AutoTokenizer)', 'wrapTokenizer', tok);
  }
  const t = tok as HfTokenizerLike;
  const bosId = isTokenId(t.bos_token_id) ? t.bos_token_id : isTokenId(t.eos_token_id) ? t.eos_token_id : undefined;
  return {
    bosId,
    encode(text: string): number[] {
      const ids = t.encode(text, { add_special_tokens: false });
      if (!Array.isArray(ids)) throw new ValidationError(`the tokenizer's encode() returned ${describe(ids)}, not an array of token ids`);
      return ids as number[];
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Packing tokens into context windows

export interface TokenWindowOptions {
  /** Tokens per window (SAELens' context_size). */
  contextSize: number;
  /** Begin every window with BOS and separate documents with BOS (SAELens' prepend_bos). */
  prependBos: boolean;
  /** Stop after this many tokens of output, rounded up to whole windows. */
  maxTokens?: number;
}

/**
 * SAELens' concat_and_batch_sequences, as its ActivationsStore calls it on text datasets
 * (sae_lens/tokenization_and_batching.py and sae_lens/training/activations_store.py in
 * jbloomAus/SAELens, v4 to v5): begin_batch_token_id = sequence_separator_token_id = BOS when
 * prepend_bos, begin_sequence_token_id = None; with prepend_bos false all three are None.
 *
 * The token ids of consecutive documents are concatenated and cut into windows of exactly
 * contextSize tokens. With prependBos:
 * - a window begins with BOS, then the next contextSize - 1 tokens of the stream, unless the
 *   stream's next token is itself BOS (then that token is the window's first);
 * - a document that continues an unfinished window is preceded by a separator BOS, unless it
 *   begins with BOS itself; no separator is added at a window's start (the window's BOS plays
 *   its part), so windows never begin BOS BOS; a separator may be a window's LAST token;
 * - empty documents contribute nothing (no separator either).
 * The incomplete last window is dropped. With maxTokens, stops after ceil(maxTokens /
 * contextSize) windows. Each window is a new Int32Array the caller may keep.
 *
 * Note: SAELens v6 added a `sequence_separator_token` setting, "bos" by default even when
 * prepend_bos is false; this function follows the v4/v5 behaviour described above.
 */
export async function* tokenWindows(
  docs: AsyncIterable<string> | Iterable<string>,
  tok: TextTokenizer,
  opts: TokenWindowOptions,
): AsyncGenerator<Int32Array> {
  const { contextSize, prependBos, maxTokens } = opts;
  if (typeof prependBos !== 'boolean') throw expected('a boolean', 'prependBos', prependBos);
  if (!Number.isSafeInteger(contextSize) || contextSize < (prependBos ? 2 : 1)) {
    // With BOS, a 1-token window would hold only the BOS and never advance through the text.
    throw expected(prependBos ? 'an integer >= 2 (prependBos takes one token)' : 'an integer >= 1', 'contextSize', contextSize);
  }
  if (maxTokens !== undefined && (!Number.isSafeInteger(maxTokens) || maxTokens < 0)) {
    throw expected('an integer >= 0', 'maxTokens', maxTokens);
  }
  if (tok === null || typeof tok !== 'object' || typeof tok.encode !== 'function') {
    throw expected('a TextTokenizer', 'tokenWindows', tok);
  }
  const bos = prependBos ? tok.bosId : undefined;
  if (prependBos && !isTokenId(bos)) {
    throw new ValidationError(`prependBos needs a BOS token, but the tokenizer has none (bosId ${describe(bos)}); set prependBos to false`);
  }
  const maxWindows = maxTokens === undefined ? Infinity : Math.ceil(maxTokens / contextSize);
  if (maxWindows === 0) return;

  let produced = 0;
  let win = new Int32Array(contextSize);
  // Tokens in `win`; 0 means no window is open (SAELens' `batch is None`).
  let n = 0;
  let docIndex = 0;
  for await (const doc of docs) {
    if (typeof doc !== 'string') throw new ValidationError(`document ${docIndex} is ${describe(doc)}, not a string`);
    const ids = tok.encode(doc);
    for (let i = 0; i < ids.length; i++) {
      if (!isTokenId(ids[i])) throw new ValidationError(`the tokenizer gave ${describe(ids[i])} at position ${i} of document ${docIndex}, not a token id`);
    }
    docIndex++;
    let offset = 0;
    while (offset < ids.length) {
      const first = ids[offset]!;
      if (bos !== undefined) {
        // A new window begins with BOS; a document joining an open window is preceded by the
        // separator (also BOS). Either way only if the text's next token is not BOS already.
        // An open window always has room for the separator (it would have been emitted if full).
        if (first !== bos) win[n++] = bos;
      }
      const take = Math.min(contextSize - n, ids.length - offset);
      for (let k = 0; k < take; k++) win[n + k] = ids[offset + k]!;
      n += take;
      offset += take;
      if (n === contextSize) {
        yield win;
        if (++produced >= maxWindows) return;
        win = new Int32Array(contextSize);
        n = 0;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Batching and padding

/** Groups items into batches of batchSize; the last batch holds the rest (never empty). */
export async function* batches<T>(items: AsyncIterable<T> | Iterable<T>, batchSize: number): AsyncGenerator<T[]> {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw expected('an integer >= 1', 'batchSize', batchSize);
  let batch: T[] = [];
  for await (const item of items) {
    batch.push(item);
    if (batch.length === batchSize) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/** A [batch, length] matrix of token ids and its attention mask, row-major. */
export interface PaddedBatch {
  /** Token ids, pad id where mask is 0. */
  ids: BigInt64Array;
  /** 1n for a real token, 0n for padding. */
  mask: BigInt64Array;
  batch: number;
  /** The longest sequence's length. */
  length: number;
  /** Each sequence's own length. */
  lengths: number[];
}

/**
 * Pads sequences of different lengths into one [B, T] int64 id matrix (T = longest) and its
 * int64 attention mask, the inputs an ONNX language model takes. Right padding by default:
 * sequence b occupies columns [0, len_b); with 'left' it occupies [T - len_b, T).
 */
export function padBatch(
  seqs: ReadonlyArray<ArrayLike<number>>,
  padId: number,
  side: 'right' | 'left' = 'right',
): PaddedBatch {
  if (!Array.isArray(seqs)) throw expected('an array of token id sequences', 'padBatch', seqs);
  if (!Number.isSafeInteger(padId)) throw expected('an integer', 'padId', padId);
  if (side !== 'right' && side !== 'left') throw expected('"right" or "left"', 'side', side);
  const lengths = seqs.map((s, b) => {
    if (s === null || typeof s !== 'object' || !Number.isSafeInteger(s.length)) {
      throw expected('an array of token ids', `sequence ${b}`, s);
    }
    return s.length;
  });
  const batch = seqs.length;
  const length = lengths.reduce((m, l) => Math.max(m, l), 0);
  const ids = new BigInt64Array(batch * length).fill(BigInt(padId));
  const mask = new BigInt64Array(batch * length);
  for (let b = 0; b < batch; b++) {
    const s = seqs[b]!;
    const start = b * length + (side === 'left' ? length - lengths[b]! : 0);
    for (let i = 0; i < s.length; i++) {
      const v = s[i];
      if (!Number.isSafeInteger(v)) throw new ValidationError(`sequence ${b} has ${describe(v)} at position ${i}, not an integer token id`);
      ids[start + i] = BigInt(v);
      mask[start + i] = 1n;
    }
  }
  return { ids, mask, batch, length, lengths };
}
