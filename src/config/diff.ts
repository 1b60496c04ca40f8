/** What changed between two configs, by named part: what a reload adds, removes and restarts. */
import { isDeepStrictEqual } from 'node:util';
import type { GatehouseConfig } from './types.ts';

/** Parts named `admin`, `runtime`, `log`, `cluster`, `telemetry`, `upstream:NAME`, `listener:NAME`, `actor:NAME`. */
export interface ConfigDiff {
  added: string[];
  removed: string[];
  changed: string[];
}

function parts(cfg: GatehouseConfig): Map<string, unknown> {
  const m = new Map<string, unknown>([
    ['admin', cfg.admin],
    ['runtime', cfg.runtime],
    ['log', cfg.log],
  ]);
  if (cfg.cluster) m.set('cluster', cfg.cluster);
  if (cfg.telemetry) m.set('telemetry', cfg.telemetry);
  for (const u of cfg.upstreams) m.set(`upstream:${u.name}`, u);
  for (const l of cfg.listeners) m.set(`listener:${l.name}`, l);
  for (const a of cfg.actors) m.set(`actor:${a.name}`, a);
  return m;
}

/**
 * Compares two normalized configs part by part. A part is `changed` when any of its keys differs
 * (after defaults), so reformatting the file or spelling a default out changes nothing.
 *
 * @example
 * diffConfig(before, after); // { added: ['listener:web'], removed: [], changed: ['upstream:app'] }
 */
export function diffConfig(a: GatehouseConfig, b: GatehouseConfig): ConfigDiff {
  const before = parts(a);
  const after = parts(b);
  const diff: ConfigDiff = { added: [], removed: [], changed: [] };
  for (const [k, v] of after) {
    if (!before.has(k)) diff.added.push(k);
    else if (!isDeepStrictEqual(before.get(k), v)) diff.changed.push(k);
  }
  for (const k of before.keys()) if (!after.has(k)) diff.removed.push(k);
  return diff;
}
