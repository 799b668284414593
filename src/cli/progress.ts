// A progress bar with tokens/s on a terminal (cli-progress), nothing when stderr is not a TTY
// (pipes, CI logs), so scripted output stays clean. SAEKIT_PROGRESS=jsonl replaces the bars
// with one JSON line per completed unit of work (a chunk, shard, batch or checkpoint), so that
// a test can kill a job right after its N-th unit (test/kill.resume.test.ts).
import cliProgress from 'cli-progress';
import { ValidationError } from '../errors.js';
import type { StreamProgress } from '../stream/encodeFile.js';

/**
 * What a job counts in its progress lines: encode and decode a streamed chunk (encoded or
 * decoded, its write issued and the previous chunk's write landed), activations a shard file
 * written, analyze and eval a batch added to the statistics, train a checkpoint saved.
 */
export type ProgressUnit = 'chunk' | 'shard' | 'batch' | 'checkpoint';

/** True when SAEKIT_PROGRESS=jsonl asks for progress lines instead of bars. */
export function progressLines(): boolean {
  const v = process.env.SAEKIT_PROGRESS ?? '';
  if (v !== '' && v !== 'jsonl') throw new ValidationError(`Expected jsonl or nothing for SAEKIT_PROGRESS but received ${JSON.stringify(v)}`);
  return v === 'jsonl';
}

/**
 * Under SAEKIT_PROGRESS=jsonl, a function that writes one line per completed UNIT of JOB to
 * stderr, `{"progress":JOB,"unit":UNIT,"n":N,"done":D,"total":T}` (N counts this process's
 * units from 1; D of T rows, or steps for checkpoints); otherwise one that does nothing. The
 * write is synchronous (stderr is, on pipes and files), so the line is out before the job goes on.
 */
export function unitReporter(job: string, unit: ProgressUnit): (done: number, total: number) => void {
  if (!progressLines()) return () => {};
  let n = 0;
  return (done, total) => {
    process.stderr.write(`${JSON.stringify({ progress: job, unit, n: ++n, done, total })}\n`);
  };
}

export interface Progress {
  update(p: StreamProgress): void;
  stop(): void;
}

/**
 * A bar labelled LABEL; under SAEKIT_PROGRESS=jsonl, progress lines counting each update as one
 * UNIT instead (none when UNIT is undefined: the job reports its units itself).
 */
export function progressBar(label: string, unit: ProgressUnit | undefined = 'chunk'): Progress {
  if (progressLines()) {
    const report = unit === undefined ? () => {} : unitReporter(label, unit);
    return { update: (p) => report(p.rowsDone, p.rows), stop() {} };
  }
  if (!process.stderr.isTTY || process.env.CI) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total} rows | {rate} tokens/s`,
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      const rate = p.seconds > 0 ? Math.round(p.rowsDone / p.seconds) : 0;
      if (!started) {
        bar.start(p.rows, 0, { rate });
        started = true;
      }
      bar.update(p.rowsDone, { rate });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** A download bar (bytes) on a terminal; nothing in pipes and CI. */
export function downloadProgress(): { update: (p: { file: string; bytes: number; total: number }) => void; stop(): void } {
  if (progressLines() || !process.stderr.isTTY || process.env.CI) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { format: 'download {file} [{bar}] {percentage}% | {mb}/{totalMb} MB', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let current = '';
  return {
    update(p) {
      const mb = (p.bytes / 1e6).toFixed(1);
      const totalMb = (p.total / 1e6).toFixed(1);
      if (p.file !== current) {
        if (current) bar.stop();
        current = p.file;
        bar.start(p.total, p.bytes, { file: p.file, mb, totalMb });
      } else bar.update(p.bytes, { file: p.file, mb, totalMb });
    },
    stop() {
      if (current) bar.stop();
      current = '';
    },
  };
}
