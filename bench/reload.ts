/**
 * The reload suite (`npm run bench -- --suite reload`): what hot reloads cost the traffic that
 * runs through them, and whether reloads leak. Gatehouse runs at `workers: 1`, pinned as the
 * HTTP suite pins it (PIN=split: wrk and the backends on CPU 0, Gatehouse on CPU 1), started as
 * `gatehouse start` ships: `node DAEMON_NODE_FLAGS bin/gatehouse.mjs start` (src/daemon/node-flags.ts).
 * Two configs alternate: B adds a second backend to the upstream, a second route and another value
 * of the route's request-header middleware; A takes them away again.
 *
 * 1. Latency: wrk -t1 -c50 --latency keep-alive for --dur s, once with one reload per second
 *    (POST /reload, each answer awaited, A and B alternating) and once without, interleaved, the
 *    order swapped every rep. The p99 and req/s of the run with reloads ÷ the run without, per
 *    rep; the median over the reps where neither run met more than FOREIGN_MAX % foreign CPU
 *    (target: p99 <= 1.5×). Every run also counts non-2xx answers and
 *    socket errors: a reload may not drop a request.
 * 2. Memory: a fresh daemon, with bench/tools/mem-probe.ts preloaded in each thread; --reloads
 *    reloads back to back (POST /reload, each answer awaited, timed), no traffic. At checkpoints
 *    (after 1, 10, 100, ... reloads) the RSS is read, then once the daemon idled --settle s, a full
 *    GC runs in each thread, then the RSS, each thread's JS heap and the actor counts are read
 *    (and /proc/PID/smaps is kept, to tell V8's pages from malloc's). Target: RSS after the
 *    last <= 1.05 × RSS after the first. The growth over the second half of the reloads tells a
 *    leak (it grows with every reload) from warm-up (JIT code, allocator pools: it levels off).
 *    --snapshot also writes heap snapshots at the first, half and last checkpoint and lists the
 *    constructors that grew most between the half and the last (bench/tools/heapsnapshot-diff.ts).
 *
 *   npm run bench -- --suite reload [--reps 3] [--dur 10] [--reloads 1000] [--snapshot] [--only latency|memory] [--settle 3]
 *   env: PIN=split|none  QUIET_WAIT=5  FOREIGN_MAX=15
 *        DAEMON_FLAGS (the daemons' Node flags instead of DAEMON_NODE_FLAGS; "" for none, to compare)
 *        EXTRA_NODE_OPTIONS (added to the memory daemon's NODE_OPTIONS, e.g. --import of a tracer)
 *
 * Tables: stdout and bench/results/reload-latest.md; raw: bench/out/reload-<time>/.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Procs, freePort, waitPort, type Child } from './lib/procs.ts';
import { ForeignCpu, treeCpuSeconds, treeRssKiB, waitQuiet } from './lib/cpu.ts';
import { fmt, max, mdTable, median, ratio } from './lib/stats.ts';
import { onPath } from './rows.ts';
import { aggregate, diff } from './tools/heapsnapshot-diff.ts';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const NODE = process.execPath;
const P99_TARGET = 1.5;
const RSS_TARGET = 1.05;
/** A run during which other processes took more than this % of a core does not judge the p99 target (env FOREIGN_MAX). */
const FOREIGN_MAX = Number(process.env.FOREIGN_MAX ?? 15);
const log = (msg: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
/** The q-quantile of xs (nearest rank); NaN when empty. */
const quantile = (xs: readonly number[], q: number): number => (xs.length === 0 ? Number.NaN : [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)]!);
/** The Node flags both daemons run with: those `gatehouse start` ships with, or env DAEMON_FLAGS ('' for none, to compare). */
const DAEMON_FLAGS = process.env.DAEMON_FLAGS !== undefined ? process.env.DAEMON_FLAGS.split(/\s+/).filter(Boolean) : [...DAEMON_NODE_FLAGS];
const flagsNote = DAEMON_FLAGS.length > 0 ? `\`node ${DAEMON_FLAGS.join(' ')}\`` : 'no Node flags (DAEMON_FLAGS="")';

const { values: argv } = parseArgs({
  options: { reps: { type: 'string', default: '3' }, dur: { type: 'string', default: '10' }, reloads: { type: 'string', default: '1000' }, snapshot: { type: 'boolean', default: false }, only: { type: 'string' }, settle: { type: 'string', default: '3' } },
  strict: true,
});
const num = (v: string, name: string, max: number): number => {
  const n = Number(v);
  if (!(Number.isInteger(n) && n > 0 && n <= max)) throw new Error(`${name} must be an integer in [1, ${max}], got ${JSON.stringify(v)}`);
  return n;
};
const o = { reps: num(argv.reps, '--reps', 50), dur: num(argv.dur, '--dur', 120), reloads: num(argv.reloads, '--reloads', 100_000), snapshot: argv.snapshot, only: argv.only, settleS: num(argv.settle, '--settle', 600), quietWaitS: Number(process.env.QUIET_WAIT ?? 5) };
if (o.only !== undefined && o.only !== 'latency' && o.only !== 'memory') throw new Error(`--only must be latency or memory, got ${JSON.stringify(o.only)}`);
if (!onPath('wrk')) throw new Error('the reload suite needs wrk on PATH (apt-get install -y wrk)');
const split = (process.env.PIN ?? 'split') === 'split' && os.availableParallelism() >= 2 && onPath('taskset');
const plan = split ? { load: '0', proxy: '1', note: 'split: wrk + backends on CPU 0, Gatehouse on CPU 1' } : { load: undefined, proxy: undefined, note: 'none: nothing pinned' };

const stamp = new Date().toISOString().replace(/[:]/g, '').replace(/\..*/, '');
const outDir = path.join(HERE, 'out', `reload-${stamp}`);
mkdirSync(outDir, { recursive: true });
const procs = new Procs(outDir);

type Version = 'A' | 'B';

/** The two configs the reloads alternate between. */
function configYaml(v: Version, ports: { admin: number; listen: number; b1: number; b2: number }): string {
  return [
    '# written by bench/reload.ts',
    `admin: { listen: "127.0.0.1:${ports.admin}" }`,
    'runtime: { workers: 1, shutdownTimeout: 5s }',
    'log: { level: info }',
    'upstreams:',
    `  - { name: up, backends: [ "127.0.0.1:${ports.b1}"${v === 'B' ? `, "127.0.0.1:${ports.b2}"` : ''} ] }`,
    'listeners:',
    '  - name: bench',
    '    protocol: http',
    `    listen: "127.0.0.1:${ports.listen}"`,
    '    maxConnections: 100000',
    '    accessLog: false',
    '    routes:',
    `      - { name: all, match: { pathPrefix: / }, upstream: up, headers: { request: { set: { x-config: "${v}" } } } }`,
    ...(v === 'B' ? ['      - { name: extra, match: { pathPrefix: /extra }, upstream: up }'] : []),
    '',
  ].join('\n');
}

/** A running daemon: its child, its config file and the version in force. */
interface Daemon { child: Child; file: string; ports: { admin: number; listen: number; b1: number; b2: number }; version: Version; reloads: number }

async function startDaemon(tag: string, b1: number, b2: number, env: Record<string, string> = {}): Promise<Daemon> {
  const ports = { admin: await freePort(), listen: await freePort(), b1, b2 };
  const file = path.join(outDir, `${tag}.yaml`);
  writeFileSync(file, configYaml('A', ports));
  const child = procs.spawn(`gatehouse-${tag}`, NODE, [...DAEMON_FLAGS, path.join(REPO, 'bin/gatehouse.mjs'), 'start', '--config', file], { cpus: plan.proxy, env: { GATEHOUSE_LOG_PRETTY: '0', ...env } });
  await child.waitLine(/"msg":"gatehouse started"/, 30_000);
  await waitPort(ports.listen, 10_000, child);
  return { child, file, ports, version: 'A', reloads: 0 };
}

/** Switches the daemon to the other config with POST /reload; resolves with the answer's time (ms). Throws unless it answered 200. */
async function reload(d: Daemon): Promise<number> {
  const next: Version = d.version === 'A' ? 'B' : 'A';
  writeFileSync(d.file, configYaml(next, d.ports));
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${d.ports.admin}/reload`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`reload ${d.reloads + 1} answered ${res.status}: ${body}`);
  d.version = next;
  d.reloads++;
  return ms;
}

/** wrk -t1 --latency keep-alive, pinned with the backends; its figures. */
async function wrk(tag: string, port: number, conns: number, durS: number): Promise<{ requests: number; secs: number; errors: number; p50Ms: number; p99Ms: number }> {
  const c = procs.spawn(`wrk-${tag}`, 'wrk', ['-t1', `-c${conns}`, `-d${durS}s`, '--latency', `http://127.0.0.1:${port}/`], { cpus: plan.load, keepLines: 200 });
  const timer = setTimeout(() => void c.stop(2_000), durS * 1000 + 20_000);
  await c.exited;
  clearTimeout(timer);
  const out = c.lines.join('\n');
  const ms = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    return m ? Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : 1) : Number.NaN;
  };
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? Number.NaN);
  if (!Number.isFinite(requests)) throw new Error(`wrk: no result:\n${out}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { requests, secs: Number(/requests in ([\d.]+)s/.exec(out)?.[1]), errors, p50Ms: ms('50'), p99Ms: ms('99') };
}

interface LatencySample { rep: number; reloading: boolean; rps: number; p50Ms: number; p99Ms: number; errors: number; reloads: number; reloadMs: number[]; proxyCpuPct: number; foreignPct: number }

/** One measured run: wrk for --dur s, with one reload per second when `reloading`. The daemon starts and ends on config A. */
async function latencyRun(d: Daemon, rep: number, reloading: boolean): Promise<LatencySample> {
  await waitQuiet(o.quietWaitS * 1000);
  const foreign = new ForeignCpu();
  foreign.start();
  const cpu0 = treeCpuSeconds(d.child.pid);
  const load = wrk(`${reloading ? 'reload' : 'steady'}-r${rep}`, d.ports.listen, 50, o.dur);
  const reloadMs: number[] = [];
  if (reloading) {
    const t0 = performance.now();
    // One reload per second from 0.5 s in, an even number so that the run ends on config A.
    for (let i = 0; i < o.dur - (o.dur % 2); i++) {
      await sleep(Math.max(0, t0 + 500 + i * 1000 - performance.now()));
      reloadMs.push(await reload(d));
    }
  }
  const w = await load;
  const cpuS = treeCpuSeconds(d.child.pid) - cpu0;
  const foreignPct = foreign.stop();
  const s: LatencySample = { rep, reloading, rps: (w.requests - w.errors) / w.secs, p50Ms: w.p50Ms, p99Ms: w.p99Ms, errors: w.errors, reloads: reloadMs.length, reloadMs, proxyCpuPct: (100 * cpuS) / w.secs, foreignPct };
  log(`latency rep${rep} ${reloading ? 'with reloads' : 'no reloads  '}: ${fmt(s.rps)} req/s p50 ${fmt(s.p50Ms, 2)} ms p99 ${fmt(s.p99Ms, 2)} ms errors ${s.errors} reloads ${s.reloads} (median ${fmt(median(reloadMs), 1)} ms) proxy CPU ${fmt(s.proxyCpuPct)}% foreign ${fmt(foreignPct)}%`);
  return s;
}

interface Checkpoint { reloads: number; rssKiB: number; burstRssKiB: number; heapUsedKiB: number[]; actors: Record<string, number>; secs: number }

let probeSeq = 0;
/** A full GC in every thread of the daemon (mem-probe), then its numbers: one answer per thread. */
async function probe(dir: string, label: string, snapshot = false): Promise<{ threadId: number; mu: NodeJS.MemoryUsage }[]> {
  writeFileSync(path.join(dir, `cmd-${String(++probeSeq).padStart(4, '0')}.json`), JSON.stringify({ label, gc: true, snapshot }));
  // The main thread and the one shard thread (workers: 1) each answer; bounded to 2 min.
  for (let i = 0; i < 1_200; i++) {
    if (readdirSync(dir).filter((f) => f.startsWith(`${label}-t`) && f.endsWith('.json')).length >= 2) break;
    await sleep(100);
  }
  return readdirSync(dir)
    .filter((f) => f.startsWith(`${label}-t`) && f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as { threadId: number; mu: NodeJS.MemoryUsage })
    .sort((a, b) => a.threadId - b.threadId);
}

async function actorCounts(d: Daemon): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${d.ports.admin}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  return Object.fromEntries([...text.matchAll(/^gatehouse_actors\{type="([^"]+)"\} (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
}

/** Reloads back to back up to `o.reloads`, with a checkpoint at each of CHECKPOINTS (and the last); bounded to 15 min. */
async function memoryRun(b1: number, b2: number): Promise<{ points: Checkpoint[]; top: { key: string; count: number; size: number }[] | undefined; topFrom: number; reloadMs: number[]; elapsedS: number }> {
  const probeDir = path.join(outDir, 'mem-probe');
  mkdirSync(probeDir, { recursive: true });
  const d = await startDaemon('memory', b1, b2, { NODE_OPTIONS: `--expose-gc --import=${path.join(HERE, 'tools/mem-probe.ts')} ${process.env.EXTRA_NODE_OPTIONS ?? ''}`.trim(), MEM_PROBE_DIR: probeDir });
  // Traffic first, so that the pools, the JIT and the heap are where a serving daemon has them.
  await wrk('memory-warm', d.ports.listen, 50, 2);
  const marks = [1, 2, 10, 100, 250, Math.round(o.reloads / 2), 750, o.reloads].filter((n, i, a) => n <= o.reloads && a.indexOf(n) === i).sort((x, y) => x - y);
  const points: Checkpoint[] = [];
  const reloadMs: number[] = [];
  const t0 = performance.now();
  const deadline = t0 + 15 * 60_000;
  for (const mark of marks) {
    while (d.reloads < mark && performance.now() < deadline) reloadMs.push(await reload(d));
    const snap = o.snapshot && (mark === marks[0] || mark === Math.round(o.reloads / 2) || mark === marks.at(-1));
    // Idle first, so that the collections the burst started have finished.
    const burstRssKiB = treeRssKiB(d.child.pid);
    await sleep(o.settleS * 1000);
    const threads = await probe(probeDir, `at-${d.reloads}`);
    const p: Checkpoint = { reloads: d.reloads, rssKiB: treeRssKiB(d.child.pid), heapUsedKiB: threads.map((t) => t.mu.heapUsed / 1024), actors: await actorCounts(d), secs: (performance.now() - t0) / 1000, burstRssKiB };
    // The mappings behind the RSS, for growth outside the V8 heaps (raw, to compare checkpoints).
    try {
      writeFileSync(path.join(outDir, `smaps-${d.reloads}.txt`), readFileSync(`/proc/${d.child.pid}/smaps`, 'utf8'));
    } catch {
      // not Linux
    }
    // A snapshot costs memory of its own: taken after the readings.
    if (snap) await probe(probeDir, `snap-${d.reloads}`, true);
    points.push(p);
    log(`memory after ${p.reloads} reloads: RSS ${fmt(p.rssKiB / 1024, 1)} MiB (${fmt(p.burstRssKiB / 1024, 1)} right after the reloads), heap used ${p.heapUsedKiB.map((h) => `${fmt(h / 1024, 2)}`).join(' + ')} MiB (${fmt(p.secs, 0)} s)`);
    if (d.reloads < mark) break;
  }
  await d.child.stop(10_000);
  let top: { key: string; count: number; size: number }[] | undefined;
  let topFrom = 0;
  if (o.snapshot) {
    const snaps = readdirSync(probeDir).filter((f) => f.endsWith('.heapsnapshot'));
    const byThread = (reloads: number): string[] => snaps.filter((f) => f.startsWith(`snap-${reloads}-t`)).sort();
    // Between the half and the last: warm-up (JIT code, pools) is over by then, a leak is not.
    topFrom = byThread(Math.round(o.reloads / 2)).length > 0 && Math.round(o.reloads / 2) < points.at(-1)!.reloads ? Math.round(o.reloads / 2) : points[0]!.reloads;
    const [from, last] = [byThread(topFrom), byThread(points.at(-1)!.reloads)];
    top = from.flatMap((f, i) => (last[i] ? diff(aggregate(path.join(probeDir, last[i])), aggregate(path.join(probeDir, f))).slice(0, 8).map((r) => ({ ...r, key: `t${i} ${r.key}` })) : []));
  }
  return { points, top, topFrom, reloadMs, elapsedS: (performance.now() - t0) / 1000 };
}

/** Whether the actor counts by type are the same at every checkpoint of the same config (odd reload counts: B, even: A). */
function actorsLine(points: Checkpoint[]): string {
  const differ = [0, 1].flatMap((parity) => {
    const same = points.filter((p) => p.reloads % 2 === parity);
    return same.filter((p) => !isDeepStrictEqual(p.actors, same[0]!.actors)).map((p) => `after ${p.reloads}: ${JSON.stringify(p.actors)} (after ${same[0]!.reloads}: ${JSON.stringify(same[0]!.actors)})`);
  });
  return differ.length === 0 ? 'Actor counts by type: the same at every checkpoint of the same config.' : `**Actor counts grew**: ${differ.join('; ')}.`;
}

function report(lat: LatencySample[], mem: Awaited<ReturnType<typeof memoryRun>>, facts: Record<string, unknown>): string {
  // Per rep, the run with reloads ÷ the run without; judged on clean reps only (both runs with
  // foreign CPU <= FOREIGN_MAX %): another tenant's burst in one run of a pair decides its p99.
  const pairs = [...new Set(lat.map((s) => s.rep))].map((rep) => {
    const [on, off] = [lat.find((s) => s.rep === rep && s.reloading), lat.find((s) => s.rep === rep && !s.reloading)];
    return { rep, clean: on !== undefined && off !== undefined && on.foreignPct <= FOREIGN_MAX && off.foreignPct <= FOREIGN_MAX, p99: ratio(on?.p99Ms ?? Number.NaN, off?.p99Ms ?? Number.NaN), rps: ratio(on?.rps ?? Number.NaN, off?.rps ?? Number.NaN) };
  });
  const judged = pairs.some((p) => p.clean) ? pairs.filter((p) => p.clean) : pairs;
  const judgedOn = `${judged === pairs ? 'no rep clean: all' : `${judged.length} clean of ${pairs.length}`} reps; per rep ${pairs.map((p) => `${fmt(p.p99, 2)}${p.clean ? '' : '*'}`).join(' ')}`;
  const p99Ratio = median(judged.map((p) => p.p99));
  const rpsRatio = median(judged.map((p) => p.rps));
  const errors = lat.reduce((a, s) => a + s.errors, 0);
  const allReloadMs = lat.flatMap((s) => s.reloadMs);
  const first = mem.points[0];
  const last = mem.points.at(-1);
  const rssRatio = o.snapshot ? Number.NaN : first && last ? last.rssKiB / first.rssKiB : Number.NaN;
  // The checkpoint nearest half of the reloads.
  const half = mem.points.reduce<Checkpoint | undefined>((b, p) => (!b || Math.abs(p.reloads - o.reloads / 2) < Math.abs(b.reloads - o.reloads / 2) ? p : b), undefined);
  const halfRatio = o.snapshot || !half || !last ? Number.NaN : last.rssKiB / half.rssKiB;
  const verdict = (ok: boolean): string => (ok ? 'met' : '**NOT met**');
  const rows = lat.map((s) => [String(s.rep), s.reloading ? 'with reloads' : 'no reloads', fmt(s.rps), fmt(s.p50Ms, 2), fmt(s.p99Ms, 2), String(s.errors), String(s.reloads), fmt(median(s.reloadMs), 1), fmt(max(s.reloadMs), 1), fmt(s.proxyCpuPct), fmt(s.foreignPct)]);
  const memRows = mem.points.map((p) => [fmt(p.reloads), fmt(p.rssKiB / 1024, 1), fmt(first ? (100 * (p.rssKiB - first.rssKiB)) / first.rssKiB : Number.NaN, 1), fmt(p.burstRssKiB / 1024, 1), p.heapUsedKiB.map((h) => fmt(h / 1024, 2)).join(' / '), fmt(Object.values(p.actors).reduce((a, b) => a + b, 0)), fmt(p.secs, 0)]);
  return [
    `## Gatehouse reload bench ${String(facts.date)}`,
    '',
    `\`npm run bench -- --suite reload --reps ${o.reps} --dur ${o.dur} --reloads ${o.reloads}${o.snapshot ? ' --snapshot' : ''}\`, ${fmt(Number(facts.elapsedS) / 60, 0)} min.`,
    '',
    `Machine: ${String(facts.nproc)} CPUs, Node ${String(facts.node)}, ${String(facts.wrk)}; pinning ${plan.note}; git ${String(facts.git)}${Number(facts.gitDirtySrc) > 0 ? ` (+${String(facts.gitDirtySrc)} uncommitted files in src/)` : ''}. Gatehouse \`workers: 1\`, started with ${flagsNote}; configs A (one backend, one route) and B (two backends, a second route, another header value) alternate.`,
    '',
    '### Summary',
    '',
    mdTable(['measure', ' value', ' target', 'verdict'], [
      [`p99 with 1 reload/s ÷ p99 without, c50 keep-alive (median of ${judgedOn}; * foreign CPU > ${FOREIGN_MAX} %)`, fmt(p99Ratio, 2), `<= ${P99_TARGET}`, judged === pairs ? 'not judged (no clean rep)' : verdict(p99Ratio <= P99_TARGET)],
      ['req/s with 1 reload/s ÷ req/s without (the same reps)', fmt(rpsRatio, 2), '-', '-'],
      ['failed requests (non-2xx + socket errors), all runs', String(errors), '0', verdict(errors === 0)],
      [`RSS after ${fmt(last?.reloads ?? Number.NaN)} reloads ÷ after ${fmt(first?.reloads ?? Number.NaN)}`, fmt(rssRatio, 3), `<= ${RSS_TARGET}`, verdict(rssRatio <= RSS_TARGET)],
      [`RSS after ${fmt(last?.reloads ?? Number.NaN)} reloads ÷ after ${fmt(half?.reloads ?? Number.NaN)} (second half: a leak grows here as in the first)`, fmt(halfRatio, 3), '-', '-'],
      ['reload answer time (POST /reload under c50 load), median / max ms', `${fmt(median(allReloadMs), 1)} / ${fmt(max(allReloadMs), 1)}`, '-', '-'],
      ['reload answer time back to back without traffic (memory run), median / p99 ms', `${fmt(median(mem.reloadMs), 1)} / ${fmt(quantile(mem.reloadMs, 0.99), 1)}`, '-', '-'],
    ]),
    '',
    `### Latency: wrk -t1 -c50 keep-alive, ${o.dur} s per run, with and without one reload per second`,
    '',
    mdTable(['rep', 'run', ' req/s', ' p50 ms', ' p99 ms', ' errors', ' reloads', ' reload ms median', ' reload ms max', ' proxy CPU %', ' foreign CPU %'], rows),
    '',
    `### Memory: ${fmt(last?.reloads ?? 0)} reloads back to back (no traffic after a 2 s warm-up), read after ${o.settleS} s idle and a full GC in each thread${o.snapshot ? ' (with --snapshot: the RSS after the first snapshot includes the snapshot\'s own memory, so no RSS verdict)' : ''}`,
    '',
    mdTable(['after reloads', ' RSS MiB', ' RSS growth %', ' RSS MiB right after the reloads', ' heap used MiB (main / shard)', ' actors', ' elapsed s'], memRows),
    '',
    actorsLine(mem.points),
    ...(mem.top ? ['', `Largest heap growth between the snapshots after ${fmt(mem.topFrom)} and after ${fmt(last?.reloads ?? Number.NaN)} reloads (per thread; t0 is the main thread):`, '', mdTable(['constructor', ' count Δ', ' bytes Δ'], mem.top.map((r) => [r.key, fmt(r.count), fmt(r.size)]))] : []),
    '',
  ].join('\n');
}

async function main(): Promise<number> {
  const t0 = Date.now();
  log(`reload bench: reps=${o.reps} dur=${o.dur}s reloads=${o.reloads} pin=${plan.note}; output ${path.relative(REPO, outDir)}/`);
  const backends = [procs.spawn('http-backend-1', NODE, [path.join(HERE, 'backends/http-backend.ts'), '0'], { cpus: plan.load, keepLines: 5 }), procs.spawn('http-backend-2', NODE, [path.join(HERE, 'backends/http-backend.ts'), '0'], { cpus: plan.load, keepLines: 5 })];
  const [b1, b2] = await Promise.all(backends.map(async (b) => (JSON.parse(await b.waitLine(/"ready":true/, 15_000)) as { port: number }).port));

  const lat: LatencySample[] = [];
  if (o.only !== 'memory') {
    const d = await startDaemon('latency', b1!, b2!);
    await wrk('warm', d.ports.listen, 50, 2);
    await reload(d);
    await reload(d);
    for (let rep = 1; rep <= o.reps; rep++) {
      for (const reloading of rep % 2 === 1 ? [false, true] : [true, false]) lat.push(await latencyRun(d, rep, reloading));
    }
    await d.child.stop(10_000);
  }
  const mem = o.only === 'latency' ? { points: [], top: undefined, topFrom: 0, reloadMs: [], elapsedS: 0 } : await memoryRun(b1!, b2!);
  await Promise.all(backends.map((b) => b.stop(5_000)));

  const sh = (cmd: string): string => execFileSync('sh', ['-c', `${cmd}; true`], { encoding: 'utf8', cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const facts = { date: new Date().toISOString(), nproc: os.availableParallelism(), node: process.version, wrk: sh('wrk -v 2>&1').split('\n')[0]?.split(' [')[0], git: sh('git rev-parse --short HEAD'), gitDirtySrc: Number(sh('git status --porcelain -- src | wc -l')), elapsedS: (Date.now() - t0) / 1000 };
  const md = report(lat, mem, facts);
  process.stdout.write(`\n${md}`);
  writeFileSync(path.join(outDir, 'table.md'), md);
  mkdirSync(path.join(HERE, 'results'), { recursive: true });
  writeFileSync(path.join(HERE, 'results', 'reload-latest.md'), md);
  writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify({ facts, options: o, latency: lat, memory: mem }, null, 2)}\n`);
  log(`wrote bench/results/reload-latest.md and ${path.relative(REPO, outDir)}/results.json (${fmt((Date.now() - t0) / 1000)} s)`);
  return 0;
}

let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await procs.stopAll(5_000);
  }
  process.exit(code);
}
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) process.on(sig, () => void shutdown(code));
process.on('exit', () => procs.killAllNow());

main().then(
  (code) => shutdown(code),
  (err: unknown) => {
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return shutdown(1);
  },
);
