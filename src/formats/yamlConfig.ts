// YAML config files of published transcoders (mwhanna's wandb-config.yaml / config.yaml, a
// circuit-tracer CLT's config.yaml). Parsed by the `yaml` package (YAML 1.2, as PyYAML's
// safe_load reads these files: plain mappings of scalars), never by hand: a malformed file is a
// FormatError naming it and the parser's line, not a silently wrong field.

import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { FormatError } from '../errors.js';
import type { Json } from './saeTensors.js';

/** A YAML file whose top level is a mapping. */
export async function readYamlObject(file: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(file, code === 'ENOENT' ? 'file not found' : `cannot read: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = parse(text, { uniqueKeys: true, prettyErrors: true });
  } catch (err) {
    throw new FormatError(file, `not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FormatError(file, 'not a YAML mapping at the top level');
  return value as Json;
}

/**
 * A field of a Weights & Biases config export: `key: { value: X, desc: ... }` (what wandb writes
 * and SAELens reads as cfg[key]["value"]), or a plain `key: X`.
 */
export function wandbField(cfg: Json, key: string): unknown {
  const v = cfg[key];
  if (typeof v === 'object' && v !== null && !Array.isArray(v) && 'value' in v) return (v as Json)['value'];
  return v;
}

/** A positive integer W&B field; a FormatError naming the file and field otherwise. */
export function wandbCount(file: string, cfg: Json, key: string, required: boolean): number | undefined {
  const v = wandbField(cfg, key);
  if (v === undefined || v === null) {
    if (required) throw new FormatError(file, `missing '${key}' (a W&B config field: ${key}: { value: N })`);
    return undefined;
  }
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new FormatError(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}
