/**
 * Summarizes V8 .cpuprofile files (from `node --cpu-prof`): the top functions by self time, and
 * self time grouped by source file, in % of all samples (idle and GC shown as their own lines).
 *   node bench/tools/cpuprofile-top.ts FILE.cpuprofile [--top N] [--skip S] [--per N] [--match TEXT]
 * --skip S ignores the first S seconds of the profile (start-up); --since/--until US keep only samples
 * in that window of CLOCK_MONOTONIC µs (process.hrtime.bigint() / 1000n, as V8 stamps profiles); --per N adds a column of µs per
 * unit of work (e.g. N = connections served) from the non-idle time; --match adds the inclusive
 * time of every stack with a function whose name or url contains TEXT.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '30' },
    skip: { type: 'string', default: '0' },
    since: { type: 'string' },
    until: { type: 'string' },
    per: { type: 'string' },
    match: { type: 'string', multiple: true },
  },
});
if (positionals.length === 0) {
  process.stderr.write('usage: node bench/tools/cpuprofile-top.ts FILE.cpuprofile [--top N] [--match TEXT]\n');
  process.exit(2);
}

const short = (url: string): string => {
  if (!url) return '(native)';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  const src = u.indexOf('/src/');
  if (src >= 0) return u.slice(src + 1);
  return u.startsWith('node:') ? u : path.basename(u);
};

for (const file of positionals) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Self time per node: the time delta attributed to the sample that follows it.
  const self = new Map<number, number>();
  const skipUs = Number(values.skip) * 1e6;
  const since = values.since ? Number(values.since) : -Infinity;
  const until = values.until ? Number(values.until) : Infinity;
  let at = 0;
  for (let i = 0; i < p.samples.length; i++) {
    at += p.timeDeltas[i] ?? 0;
    if (at < skipUs || p.startTime + at < since || p.startTime + at > until) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const key = (cf: CallFrame): string => `${cf.functionName || '(anonymous)'} ${short(cf.url)}:${cf.lineNumber + 1}`;
  const fnSelf = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  let idle = 0;
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    if (cf.functionName === '(idle)') idle += t;
    fnSelf.set(key(cf), (fnSelf.get(key(cf)) ?? 0) + t);
    const f = cf.url ? short(cf.url).replace(/:\d+$/, '') : cf.functionName;
    fileSelf.set(f, (fileSelf.get(f) ?? 0) + t);
  }
  const busy = total - idle;
  const per = values.per ? Number(values.per) : 0;
  const pct = (t: number, of = total): string =>
    `${((100 * t) / of).toFixed(1).padStart(5)}%${of === busy && per > 0 ? ` ${(t / per).toFixed(2).padStart(7)} µs` : ''}`;
  const top = Number(values.top);
  process.stdout.write(
    `\n== ${file}\nsampled ${(total / 1e6).toFixed(2)} s (window: skip ${values.skip} s${values.since ? ', since/until given' : ''}), idle ${pct(idle)}, busy ${(busy / 1e6).toFixed(2)} s` +
      `${per > 0 ? ` = ${(busy / per).toFixed(1)} µs per unit (${per} units)` : ''}\n% below: of all / of non-idle time${per > 0 ? ' / µs per unit' : ''}\n`,
  );
  process.stdout.write(`\n-- top ${top} functions by self time\n`);
  for (const [k, t] of [...fnSelf].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(t)} ${pct(t, busy)}  ${k}\n`);
  process.stdout.write(`\n-- self time by file\n`);
  for (const [k, t] of [...fileSelf].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(t)} ${pct(t, busy)}  ${k}\n`);
  for (const m of values.match ?? []) {
    // Inclusive time: samples whose stack contains a frame matching m (counted once per sample).
    let incl = 0;
    const memo = new Map<number, boolean>();
    const has = (id: number): boolean => {
      const known = memo.get(id);
      if (known !== undefined) return known;
      const cf = byId.get(id)!.callFrame;
      const r = cf.functionName.includes(m) || cf.url.includes(m) || (parent.has(id) && has(parent.get(id)!));
      memo.set(id, r);
      return r;
    };
    for (const [id, t] of self) if (has(id)) incl += t;
    process.stdout.write(`\n-- inclusive time of stacks containing "${m}": ${pct(incl)} ${pct(incl, busy)}\n`);
  }
}
