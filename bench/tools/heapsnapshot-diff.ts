/**
 * Self size and count per constructor (or per node type for strings, arrays, code...) in a V8
 * .heapsnapshot, or the difference between two, optionally divided by N (bytes per connection).
 *   node bench/tools/heapsnapshot-diff.ts AFTER.heapsnapshot [BEFORE.heapsnapshot] [--per N] [--top 30]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export interface Agg {
  count: number;
  size: number;
}

/** Aggregates a snapshot's nodes by "type:name" (objects and closures by name, the rest by type). */
export function aggregate(file: string): Map<string, Agg> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const nf = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const out = new Map<string, Agg>();
  const nodes = snap.nodes;
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + iType]!]!;
    let key: string;
    if (type === 'object' || type === 'closure' || type === 'native') key = `${type}:${snap.strings[nodes[i + iName]!]}`;
    else if (type === 'hidden' || type === 'object shape') key = `${type}:${snap.strings[nodes[i + iName]!]!.slice(0, 60)}`;
    else key = `(${type})`;
    const a = out.get(key);
    const sz = nodes[i + iSize]!;
    if (a) {
      a.count++;
      a.size += sz;
    } else out.set(key, { count: 1, size: sz });
  }
  return out;
}

/** after - before, sorted by size delta, largest first. */
export function diff(after: Map<string, Agg>, before: Map<string, Agg> | undefined): { key: string; count: number; size: number }[] {
  const keys = new Set([...after.keys(), ...(before?.keys() ?? [])]);
  const rows = [...keys].map((key) => {
    const a = after.get(key) ?? { count: 0, size: 0 };
    const b = before?.get(key) ?? { count: 0, size: 0 };
    return { key, count: a.count - b.count, size: a.size - b.size };
  });
  return rows.sort((x, y) => y.size - x.size);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ options: { per: { type: 'string', default: '1' }, top: { type: 'string', default: '30' } }, allowPositionals: true });
  if (positionals.length < 1) {
    process.stderr.write('usage: node bench/tools/heapsnapshot-diff.ts AFTER.heapsnapshot [BEFORE.heapsnapshot] [--per N] [--top 30]\n');
    process.exit(2);
  }
  const per = Number(values.per);
  const rows = diff(aggregate(positionals[0]!), positionals[1] ? aggregate(positionals[1]) : undefined);
  const total = rows.reduce((a, r) => a + r.size, 0);
  process.stdout.write(`| what | count${per > 1 ? '/conn' : ''} | bytes${per > 1 ? '/conn' : ''} |\n|---|---:|---:|\n`);
  for (const r of rows.slice(0, Number(values.top))) process.stdout.write(`| ${r.key} | ${(r.count / per).toFixed(2)} | ${(r.size / per).toFixed(0)} |\n`);
  process.stdout.write(`| total | | ${(total / per).toFixed(0)} |\n`);
}
