// Where a command's SAE comes from: a folder (--sae DIR) or a pretrained release
// (--release R --id ID, or --sae R --id ID), pulled into the hub cache with a progress bar.
import { existsSync } from 'node:fs';
import { UsageError } from '../errors.js';
import type { CltTarget } from '../formats/cltDecoder.js';
import { readSaeDir } from '../formats/saeDir.js';
import { loadPretrainedSae, readPretrainedWeights } from '../hub/pretrained.js';
import type { SaeWeights } from '../types.js';
import { isRelease, type ReleaseEntry } from '../hub/registry.js';
import { loadSae, type Sae } from '../sae.js';
import type { Options } from './args.js';
import { deviceFlag } from './args.js';
import { downloadProgress } from './progress.js';

export const saeSourceFlags: Options = {
  sae: { type: 'string' },
  release: { type: 'string' },
  id: { type: 'string' },
  registry: { type: 'string' },
  'clt-target': { type: 'string' },
};

export const saeSourceUsage = '(--sae DIR | --release R --id ID) [--registry FILE] [--clt-target LAYER|sum]';

/** --clt-target: a cross-layer transcoder's target layer, or 'sum' (SAELens's view); undefined when not given. */
export function cltTargetFlag(values: Record<string, unknown>): CltTarget | undefined {
  const v = values['clt-target'];
  if (v === undefined) return undefined;
  if (v === 'sum') return 'sum';
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  throw new UsageError(`--clt-target must be a layer number or 'sum', got ${JSON.stringify(v)}`);
}

export interface LoadedSae {
  sae: Sae;
  /** How to name it in messages: the folder, or release/id. */
  label: string;
  /** The local folder holding its files. */
  dir: string;
  entry?: ReleaseEntry;
  /** Reads its weights again as they were loaded (a release's own reader, the same cltTarget), e.g. for W_dec. */
  readWeights: () => Promise<SaeWeights>;
}

/** Loads the SAE the flags name; ID_FLAG is the flag holding the release's SAE id ('id', or 'sae-id' where --id means a feature). */
export async function loadSaeFromFlags(values: Record<string, unknown>, idFlag = 'id'): Promise<LoadedSae> {
  const device = deviceFlag(values);
  const cltTarget = cltTargetFlag(values);
  const sae = values.sae as string | undefined;
  const release = (values.release as string | undefined) ?? (sae !== undefined && !existsSync(sae) && isRelease(sae, values.registry as string | undefined) ? sae : undefined);
  if (release !== undefined) {
    if (values.release !== undefined && sae !== undefined) throw new UsageError('give --sae DIR or --release R, not both');
    const id = values[idFlag] as string | undefined;
    const bar = downloadProgress();
    try {
      const { sae: loaded, pulled } = await loadPretrainedSae(release, id, {
        device,
        ...(cltTarget !== undefined && { cltTarget }),
        ...(values.registry !== undefined && { registry: values.registry as string }),
        ...(values.offline === true && { offline: true }),
        onProgress: bar.update,
      });
      const read = cltTarget !== undefined ? { cltTarget } : {};
      return { sae: loaded, label: `${release}/${pulled.sae.id}`, dir: pulled.dir, entry: pulled.entry, readWeights: () => readPretrainedWeights(pulled, read) };
    } finally {
      bar.stop();
    }
  }
  if (sae === undefined) throw new UsageError(`missing required flag --sae DIR (or --release RELEASE --${idFlag} ID)`);
  const read = cltTarget !== undefined ? { cltTarget } : {};
  return { sae: await loadSae(sae, { device, ...read }), label: sae, dir: sae, readWeights: () => readSaeDir(sae, read) };
}
