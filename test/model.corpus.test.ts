// Corpora for activation harvesting (src/model/corpus.ts): documents read from .txt / .jsonl
// files, packed into context windows exactly as SAELens packs them, grouped and padded.
//
// tokenWindows is checked against SAELENS below: a plain, non-streaming transcription of
// SAELens' concat_and_batch_sequences / _add_tokens_to_batch (sae_lens/tokenization_and_batching.py,
// jbloomAus/SAELens), called with the token ids its ActivationsStore passes (begin_batch and
// sequence_separator = BOS when prepend_bos, begin_sequence = None; all None otherwise).
// The tokenizer is one id per character, so documents and windows read as strings.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, ValidationError } from '../src/errors.js';
import { batches, padBatch, readCorpus, tokenWindows, type TextTokenizer } from '../src/model/corpus.js';
import { Rng } from '../src/synthetic.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('model.corpus.test');
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function corpusFile(name: string, text: string): Promise<string> {
  const file = join(await dirs.make(), name);
  await writeFile(file, text);
  return file;
}

// ---------------------------------------------------------------------------------------------
// SAELens, transcribed (None -> null, torch tensors -> arrays)

function addTokensToBatch(
  batch: number[] | null,
  tokens: number[],
  offset: number,
  contextSize: number,
  isStartOfSequence: boolean,
  beginBatch: number | null,
  beginSequence: number | null,
  separator: number | null,
): [number[], number] {
  const prefix: number[] = [];
  let first = tokens[offset]!;
  if (isStartOfSequence && beginSequence !== null && first !== beginSequence) {
    prefix.unshift(beginSequence);
    first = beginSequence;
  }
  if (batch === null) {
    if (beginBatch !== null && first !== beginBatch) {
      prefix.unshift(beginBatch);
      first = beginBatch;
    }
    const needed = Math.max(contextSize - prefix.length, 0);
    return [[...prefix.slice(0, contextSize), ...tokens.slice(offset, offset + needed)], offset + needed];
  }
  if (separator !== null && first !== separator) {
    prefix.unshift(separator);
    first = separator;
  }
  const needed = Math.max(contextSize - batch.length - prefix.length, 0);
  const prefixNeeded = Math.max(contextSize - batch.length, 0);
  return [[...batch, ...prefix.slice(0, prefixNeeded), ...tokens.slice(offset, offset + needed)], offset + needed];
}

function SAELENS(docs: number[][], contextSize: number, bos: number | null): number[][] {
  const out: number[][] = [];
  let batch: number[] | null = null;
  for (const tokens of docs) {
    let offset = 0;
    let isStart = true;
    while (tokens.length - offset > 0) {
      [batch, offset] = addTokensToBatch(batch, tokens, offset, contextSize, isStart, bos, null, bos);
      isStart = false;
      if (batch.length === contextSize) {
        out.push(batch);
        batch = null;
      }
    }
  }
  return out;
}

/** One token per character (its code point); '#' is BOS. */
const BOS_CHAR = '#';
const charTok: TextTokenizer = {
  bosId: BOS_CHAR.codePointAt(0)!,
  encode: (text) => Array.from(text, (c) => c.codePointAt(0)!),
};
const asText = (w: ArrayLike<number>) => String.fromCodePoint(...Array.from(w));

async function windows(docs: string[], contextSize: number, prependBos: boolean, maxTokens?: number): Promise<string[]> {
  const opts = maxTokens === undefined ? { contextSize, prependBos } : { contextSize, prependBos, maxTokens };
  const out = await collect(tokenWindows(docs, charTok, opts));
  for (const w of out) {
    expect(w).toBeInstanceOf(Int32Array);
    expect(w.length).toBe(contextSize);
  }
  return out.map(asText);
}

function reference(docs: string[], contextSize: number, prependBos: boolean): string[] {
  return SAELENS(docs.map(charTok.encode), contextSize, prependBos ? charTok.bosId! : null).map(asText);
}

/** Documents of varied lengths over a small alphabet, some empty, some starting with BOS. */
function randomDocs(rng: Rng, count: number): string[] {
  const docs: string[] = [];
  for (let i = 0; i < count; i++) {
    const kind = rng.int(10);
    const len = kind === 0 ? 0 : kind === 1 ? 20 + rng.int(60) : rng.int(12);
    let d = '';
    for (let k = 0; k < len; k++) d += rng.int(12) === 0 ? BOS_CHAR : 'abcdefghij'[rng.int(10)];
    if (kind === 2) d = BOS_CHAR + d;
    docs.push(d);
  }
  return docs;
}

// ---------------------------------------------------------------------------------------------

describe('readCorpus', () => {
  it('.txt: paragraphs separated by blank lines, CRLF or LF, BOM ignored', async () => {
    const file = await corpusFile(
      'c.txt',
      '\ufeff\n\nFirst paragraph,\n  indented second line.\n\n\n   \t\nSecond\r\n\r\nThird one\r\nends here\n\n',
    );
    expect(await collect(readCorpus(file))).toEqual(['First paragraph,\n  indented second line.', 'Second', 'Third one\nends here']);
    expect(await collect(readCorpus(await corpusFile('one.TXT', 'no blank\nlines at all')))).toEqual(['no blank\nlines at all']);
    expect(await collect(readCorpus(await corpusFile('empty.txt', '')))).toEqual([]);
    expect(await collect(readCorpus(await corpusFile('blank.txt', '\n \n\t\n')))).toEqual([]);
  });

  it('.jsonl: the text field of each line, blank lines skipped, textField chooses the field', async () => {
    const file = await corpusFile(
      'c.jsonl',
      '{"text": "alpha", "id": 1}\n\n{"text": "two\\n\\nparagraphs", "body": "B"}\r\n{"text": ""}\n',
    );
    expect(await collect(readCorpus(file))).toEqual(['alpha', 'two\n\nparagraphs', '']);
    const custom = await corpusFile('d.jsonl', '{"body": "x", "text": 5}\n{"body": "y"}');
    expect(await collect(readCorpus(custom, { textField: 'body' }))).toEqual(['x', 'y']);
  });

  it('.jsonl errors name the file and the line', async () => {
    const bad = await corpusFile('bad.jsonl', '{"text": "ok"}\n\n{"text": "broken\n');
    await expectReject(() => collect(readCorpus(bad)), FormatError, bad, 'line 3', 'invalid JSON');
    const missing = await corpusFile('missing.jsonl', '{"text": "ok"}\n{"body": "no text"}\n');
    await expectReject(() => collect(readCorpus(missing)), FormatError, missing, 'line 2', '"text"', 'body', 'textField');
    const notString = await corpusFile('num.jsonl', '{"text": 12}\n');
    await expectReject(() => collect(readCorpus(notString)), FormatError, notString, 'line 1', 'not a string');
    const notObject = await corpusFile('arr.jsonl', '["text"]\n');
    await expectReject(() => collect(readCorpus(notObject)), FormatError, notObject, 'line 1', 'JSON object');
  });

  it('reads lazily: documents before a bad line arrive, and stopping early reads no further', async () => {
    const file = await corpusFile('lazy.jsonl', '{"text": "a"}\n{"text": "b"}\nnot json\n');
    const got: string[] = [];
    for await (const d of readCorpus(file)) {
      got.push(d);
      if (got.length === 2) break;
    }
    expect(got).toEqual(['a', 'b']);
  });

  it('a missing file, a directory, an unknown extension and bad options are clear errors', async () => {
    const dir = await dirs.make();
    const nowhere = join(dir, 'nowhere.txt');
    await expectReject(() => collect(readCorpus(nowhere)), FormatError, nowhere, 'not found');
    const sub = join(dir, 'folder.jsonl');
    await mkdir(sub);
    await expectReject(() => collect(readCorpus(sub)), FormatError, sub, 'not a file');
    const csv = await corpusFile('c.csv', 'a,b\n');
    await expectReject(() => collect(readCorpus(csv)), FormatError, csv, '".csv"', '.txt or .jsonl');
    const noExt = await corpusFile('README', 'x');
    await expectReject(() => collect(readCorpus(noExt)), FormatError, noExt, 'no extension');
    await expectReject(() => collect(readCorpus('')), ValidationError, 'path');
    await expectReject(() => collect(readCorpus(csv, { textField: '' })), ValidationError, 'textField');
  });
});

describe('tokenWindows (SAELens concat_and_batch_sequences)', () => {
  it('a worked example: BOS starts each window, separates documents, may end a window', async () => {
    expect(await windows(['abc', 'de', 'fghij'], 4, true)).toEqual(['#abc', '#de#', '#fgh']);
    // No BOS: plain concatenation; the incomplete tail ("ij") is dropped.
    expect(await windows(['abc', 'de', 'fghij'], 4, false)).toEqual(['abcd', 'efgh']);
    // A document that begins with BOS gets no second one, at a window start or as a separator.
    expect(await windows(['#abc', '#de', 'f#gh'], 4, true)).toEqual(['#abc', '#de#', '#f#g']);
    expect(await windows(['ab', '#cd', 'e', 'fgh'], 5, true)).toEqual(['#ab#c', '#d#e#']);
    // Empty documents add nothing, not even a separator.
    expect(await windows(['', 'ab', '', '', 'cd', ''], 3, true)).toEqual(['#ab', '#cd']);
  });

  it('matches the SAELens transcription on varied documents', async () => {
    const docs = ['', 'a', 'bc', '', 'defghij', 'k'.repeat(50) + 'LONG', '#starts', 'mid#dle', 'xy', '', 'z'];
    for (const [ctx, bos] of [[1, false], [2, false], [7, false], [2, true], [3, true], [7, true], [16, true]] as const) {
      const got = await windows(docs, ctx, bos);
      expect(got, `contextSize ${ctx} prependBos ${bos}`).toEqual(reference(docs, ctx, bos));
      expect(got.length).toBeGreaterThan(0);
      if (bos) for (const w of got) expect(w.startsWith('##')).toBe(false);
    }
    // contextSize 1 without BOS: every token its own window.
    expect(await windows(['ab', '', 'c'], 1, false)).toEqual(['a', 'b', 'c']);
  });

  it('matches the SAELens transcription on random corpora', async () => {
    const rng = new Rng(seed);
    for (let trial = 0; trial < 300; trial++) {
      const docs = randomDocs(rng, 1 + rng.int(30));
      const bos = rng.int(2) === 1;
      const ctx = (bos ? 2 : 1) + rng.int(12);
      expect(await windows(docs, ctx, bos), JSON.stringify({ docs, ctx, bos })).toEqual(reference(docs, ctx, bos));
    }
  });

  it('maxTokens stops after ceil(maxTokens / contextSize) whole windows', async () => {
    const docs = randomDocs(new Rng(seed + 1), 60);
    const all = reference(docs, 7, true);
    expect(all.length).toBeGreaterThan(10);
    expect(await windows(docs, 7, true, 0)).toEqual([]);
    expect(await windows(docs, 7, true, 1)).toEqual(all.slice(0, 1));
    expect(await windows(docs, 7, true, 7)).toEqual(all.slice(0, 1));
    expect(await windows(docs, 7, true, 8)).toEqual(all.slice(0, 2));
    expect(await windows(docs, 7, true, 70)).toEqual(all.slice(0, 10));
    expect(await windows(docs, 7, true, 1e9)).toEqual(all);
  });

  it('stops reading documents once maxTokens is reached', async () => {
    let pulled = 0;
    function* docs() {
      for (;;) {
        pulled++;
        yield 'abcdefghij';
      }
    }
    expect(await collect(tokenWindows(docs(), charTok, { contextSize: 5, prependBos: false, maxTokens: 20 }))).toHaveLength(4);
    expect(pulled).toBe(2);
  });

  it('reads a corpus file end to end', async () => {
    const file = await corpusFile('e.jsonl', ['abc', 'de', 'fghij'].map((t) => JSON.stringify({ text: t })).join('\n'));
    const got = await collect(tokenWindows(readCorpus(file), charTok, { contextSize: 4, prependBos: true }));
    expect(got.map(asText)).toEqual(['#abc', '#de#', '#fgh']);
  });

  it('validates its options', async () => {
    const run = (opts: Parameters<typeof tokenWindows>[2], tok: TextTokenizer = charTok) => collect(tokenWindows(['abc'], tok, opts));
    await expectReject(() => run({ contextSize: 0, prependBos: false }), ValidationError, 'contextSize');
    await expectReject(() => run({ contextSize: 1, prependBos: true }), ValidationError, 'contextSize', '>= 2');
    await expectReject(() => run({ contextSize: 2.5, prependBos: false }), ValidationError, 'contextSize');
    await expectReject(() => run({ contextSize: 4, prependBos: false, maxTokens: -1 }), ValidationError, 'maxTokens');
    await expectReject(() => run({ contextSize: 4, prependBos: 'yes' as unknown as boolean }), ValidationError, 'prependBos');
    const noBos: TextTokenizer = { bosId: undefined, encode: charTok.encode };
    await expectReject(() => run({ contextSize: 4, prependBos: true }, noBos), ValidationError, 'prependBos', 'BOS');
    expect((await run({ contextSize: 3, prependBos: false }, noBos)).map(asText)).toEqual(['abc']);
    const badIds: TextTokenizer = { bosId: 0, encode: () => [1, 2.5] };
    await expectReject(() => run({ contextSize: 2, prependBos: false }, badIds), ValidationError, 'position 1', 'document 0');
  });
});

describe('batches', () => {
  it('groups items, the last batch holding the rest', async () => {
    async function* items() {
      for (let i = 0; i < 7; i++) yield i;
    }
    expect(await collect(batches(items(), 3))).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
    expect(await collect(batches([1, 2], 2))).toEqual([[1, 2]]);
    expect(await collect(batches([], 4))).toEqual([]);
    await expectReject(() => collect(batches([1], 0)), ValidationError, 'batchSize');
    await expectReject(() => collect(batches([1], 1.5)), ValidationError, 'batchSize');
  });
});

describe('padBatch', () => {
  const seqs = [[5, 6, 7], [8], [], [1, 2]];

  it('pads on the right by default', () => {
    const p = padBatch(seqs, 0);
    expect([p.batch, p.length, p.lengths]).toEqual([4, 3, [3, 1, 0, 2]]);
    expect(Array.from(p.ids, Number)).toEqual([5, 6, 7, 8, 0, 0, 0, 0, 0, 1, 2, 0]);
    expect(Array.from(p.mask, Number)).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]);
    expect(p.ids).toBeInstanceOf(BigInt64Array);
    expect(p.mask).toBeInstanceOf(BigInt64Array);
  });

  it('pads on the left when asked, with the given pad id; typed arrays work as sequences', () => {
    const p = padBatch([Int32Array.from([5, 6, 7]), [8], [], new Int32Array([1, 2])], 50256, 'left');
    const P = 50256;
    expect(Array.from(p.ids, Number)).toEqual([5, 6, 7, P, P, 8, P, P, P, P, 1, 2]);
    expect(Array.from(p.mask, Number)).toEqual([1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1]);
  });

  it('handles an empty batch and rejects bad input', () => {
    expect(padBatch([], 0)).toEqual({ ids: new BigInt64Array(0), mask: new BigInt64Array(0), batch: 0, length: 0, lengths: [] });
    expectThrow(() => padBatch([[1, 2.5]], 0), ValidationError, 'sequence 0', 'position 1');
    expectThrow(() => padBatch([[1]], 0.5), ValidationError, 'padId');
    expectThrow(() => padBatch([[1]], 0, 'middle' as 'left'), ValidationError, 'side');
  });
});
