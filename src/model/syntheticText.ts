// Generated English-like text for offline runs (demo, tests, benchmarks): sentences drawn
// from a fixed word list with a seeded generator, paragraphs separated by blank lines, so a
// corpus of any size exists without shipping or downloading one.
import { Rng } from '../synthetic.js';

const SUBJECTS = ['The king', 'A wise queen', 'The old sailor', 'My neighbour', 'The small dog', 'Every student', 'The river', 'A quiet engineer', 'The council', 'Her brother'];
const VERBS = ['ruled', 'crossed', 'painted', 'remembered', 'carried', 'built', 'followed', 'counted', 'watched', 'answered'];
const OBJECTS = ['the kingdom', 'a narrow bridge', 'seven red boxes', 'the northern hills', 'an empty letter', 'the long winter', 'a golden key', 'the morning train', 'their first garden', '42 stones'];
const TAILS = ['with a wise and just hand', 'before the storm', 'in 1897', 'without a word', 'because it was late', 'near the old mill', 'at exactly 3:15 pm', 'for the third time', "as if nothing had happened", 'under a grey sky'];

/** NPARAGRAPHS paragraphs of 2-6 sentences each. */
export function syntheticText(paragraphs: number, seed = 1): string {
  const rng = new Rng(seed);
  const pick = (a: readonly string[]) => a[Math.floor(rng.uniform() * a.length)]!;
  const out: string[] = [];
  for (let p = 0; p < paragraphs; p++) {
    const n = 2 + Math.floor(rng.uniform() * 5);
    const sentences: string[] = [];
    for (let s = 0; s < n; s++) sentences.push(`${pick(SUBJECTS)} ${pick(VERBS)} ${pick(OBJECTS)} ${pick(TAILS)}${rng.uniform() < 0.2 ? '!' : '.'}`);
    out.push(sentences.join(' '));
  }
  return `${out.join('\n\n')}\n`;
}
