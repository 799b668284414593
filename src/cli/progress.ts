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
