// A progress bar with tokens/s on a terminal (cli-progress), nothing when stderr is not a TTY
// (pipes, CI logs), so scripted output stays clean.
import cliProgress from 'cli-progress';
import type { StreamProgress } from '../stream/encodeFile.js';

export interface Progress {
  update(p: StreamProgress): void;
  stop(): void;
}

export function progressBar(label: string): Progress {
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
  if (!process.stderr.isTTY || process.env.CI) return { update() {}, stop() {} };
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
