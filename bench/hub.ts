/**
 * Hub benchmark: node-to-clients fan-out (1 node broadcasting to CLIENTS clients, deliveries per
 * second) and client-to-node request/response latency (p50 / p99), through Gatehouse's hub at
 * `workers: 1` and `workers: 2` and through a minimal single-thread `ws` relay (the baseline,
 * bench/peers/ws-relay.ts), measured in the same run, rows interleaved (rep 1: A B C, rep 2: B C A,
 * ...). The load generator (bench/load/hub-load.ts) plays the node and the clients.
 *
 *   npm run bench:hub [-- --reps N] [--clients N] [--msgs N] [--req-clients N] [--req-secs S] [--rows a,b]
 *   env: PIN=split|none (default split: load generator on CPU 0, proxy on CPU 1)
 *
 * Targets (issue 4): fan-out at workers: 1 at least 0.8x the relay, at workers: 2 above it.
 * Tables: stdout and bench/results/hub-latest.md; raw results and logs: bench/out/hub-<time>/.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Procs, freePort, type Child } from './lib/procs.ts';
import { treeCpuSeconds } from './lib/cpu.ts';
import { fmt, mdTable, median, ratio } from './lib/stats.ts';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const NODE = process.execPath;
const SECRET = 'bench-hub-secret-0123456789abcdef';

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    clients: { type: 'string', default: '1000' },
    msgs: { type: 'string', default: '300' },
    'req-clients': { type: 'string', default: '20' },
    'req-secs': { type: 'string', default: '3' },
    rows: { type: 'string', default: 'ws-relay,gatehouse-w1,gatehouse-w2' },
  },
});
const reps = Math.max(1, Math.min(20, Number(args.reps)));
const clients = Math.max(1, Math.min(5_000, Number(args.clients)));
const msgs = Math.max(1, Math.min(10_000, Number(args.msgs)));
const reqClients = Math.max(0, Math.min(clients, Number(args['req-clients'])));
const reqSecs = Math.max(0, Math.min(60, Number(args['req-secs'])));
const pin = (process.env.PIN ?? 'split') !== 'none' && os.availableParallelism() >= 2;
const rows = args.rows.split(',').filter(Boolean);

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = path.join(REPO, 'bench/out', `hub-${stamp}`);
mkdirSync(outDir, { recursive: true });
const procs = new Procs(outDir, { nofile: 20_000 });
process.on('exit', () => procs.killAllNow());
process.on('SIGINT', () => void procs.stopAll(1_000).then(() => process.exit(130)));

interface Result {
  ok: boolean;
  deliveriesPerSec?: number;
  p50Ms?: number;
  p99Ms?: number;
  reqPerSec?: number;
  error?: string;
  bad?: number;
  /** The proxy's CPU (all its threads) per 1,000 deliveries during the fan-out, ms. */
  proxyCpuMsPer1k?: number;
  /** The load generator's CPU share of the fan-out's wall time (near 1.0: it is the bottleneck). */
  loadBusy?: number;
}

/** The proxy's command line. Readiness is the load generator's business: it waits for the proxy's `hello` on its node, then retries client connects for a while. */
function proxyArgs(row: string, port: number, nodePort: number): string[] {
  if (row === 'ws-relay') return [path.join(REPO, 'bench/peers/ws-relay.ts'), String(port), `ws://127.0.0.1:${nodePort}/gate`];
  const workers = Number(/^gatehouse-w(\d+)$/.exec(row)?.[1]);
  if (!Number.isInteger(workers)) throw new Error(`unknown row ${row}`);
  const file = path.join(outDir, `${row}.yaml`);
  writeFileSync(
    file,
    [
      '# written by bench/hub.ts',
      'admin: { listen: "127.0.0.1:0" }',
      `runtime: { workers: ${workers}, shutdownTimeout: 2s }`,
      'log: { level: warn }',
      'listeners:',
      '  - name: hub',
      '    protocol: hub',
      `    listen: 127.0.0.1:${port}`,
      '    path: /connect',
      `    auth: { jwt: { secret: ${SECRET} } }`,
      `    nodes: [ { id: n1, url: "ws://127.0.0.1:${nodePort}/gate" } ]`,
      '    maxConnections: 100000',
      `    sendQueue: { maxMessages: ${Math.max(1_000, msgs * 2)}, onOverflow: close }`,
      // The request phase sends as fast as answers come back: far above a browser client's default.
      '    clientRateLimit: { perSecond: 1000000, burst: 1000000 }',
      '',
    ].join('\n'),
  );
  return [...DAEMON_NODE_FLAGS, path.join(REPO, 'bin/gatehouse.mjs'), 'start', '--config', file];
}

async function runOnce(row: string, rep: number): Promise<Result> {
  const [nodePort, port] = [await freePort(), await freePort()];
  const load = procs.spawn(`${row}-load-${rep}`, NODE, [path.join(REPO, 'bench/load/hub-load.ts'), String(nodePort), String(port), row === 'ws-relay' ? 'relay' : 'gatehouse', String(clients), String(msgs), String(reqClients), String(reqSecs), SECRET], {
    cpus: pin ? '0' : undefined,
    keepLines: 10,
  });
  let proxy: Child | undefined;
  try {
    await load.waitLine(/"nodeListening":true/, 30_000);
    proxy = procs.spawn(`${row}-${rep}`, NODE, proxyArgs(row, port, nodePort), { cpus: pin ? '1' : undefined });
    const result = load.waitLine(/"mode":/, 300_000);
    await load.waitLine(/"phase":"fanout-start"/, 120_000);
    const cpu0 = treeCpuSeconds(proxy.pid);
    await load.waitLine(/"phase":"fanout-end"/, 180_000);
    const cpu1 = treeCpuSeconds(proxy.pid);
    const r = JSON.parse(await result) as Result & { fanoutSecs?: number; loadCpuS?: number };
    if (r.ok) {
      r.proxyCpuMsPer1k = ((cpu1 - cpu0) * 1e6) / (clients * msgs);
      r.loadBusy = (r.loadCpuS ?? NaN) / (r.fanoutSecs ?? NaN);
    }
    return r;
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  } finally {
    await load.stop(2_000);
    await proxy?.stop(5_000);
  }
}

const results = new Map<string, Result[]>(rows.map((r) => [r, []]));
for (let rep = 0; rep < reps; rep++) {
  const order = rows.map((_, i) => rows[(i + rep) % rows.length]!);
  for (const row of order) {
    const r = await runOnce(row, rep);
    results.get(row)!.push(r);
    process.stdout.write(`${row} rep ${rep + 1}: ${r.ok ? `${fmt(r.deliveriesPerSec ?? 0)} deliveries/s, p50 ${fmt(r.p50Ms ?? NaN, 3)} ms, p99 ${fmt(r.p99Ms ?? NaN, 3)} ms` : `FAILED ${r.error ?? `${r.bad} messages out of order or missing`}`}\n`);
  }
}
await procs.stopAll();

const ok = (row: string) => results.get(row)!.filter((r) => r.ok);
const med = (row: string, k: keyof Result) => median(ok(row).map((r) => r[k] as number));
const base = rows.includes('ws-relay') ? 'ws-relay' : undefined;
const table = mdTable(
  ['row', 'fan-out deliveries/s', 'x relay', 'proxy CPU ms per 1k deliveries', 'CPU x relay', 'load gen busy', 'req p50 ms', 'req p99 ms', 'p99 x relay', 'req/s', 'ok runs'],
  rows.map((row) => [
    row,
    fmt(med(row, 'deliveriesPerSec')),
    base ? fmt(ratio(med(row, 'deliveriesPerSec'), med(base, 'deliveriesPerSec')), 2) : '',
    fmt(med(row, 'proxyCpuMsPer1k'), 3),
    base ? fmt(ratio(med(row, 'proxyCpuMsPer1k'), med(base, 'proxyCpuMsPer1k')), 2) : '',
    fmt(med(row, 'loadBusy'), 2),
    fmt(med(row, 'p50Ms'), 3),
    fmt(med(row, 'p99Ms'), 3),
    base ? fmt(ratio(med(row, 'p99Ms'), med(base, 'p99Ms')), 2) : '',
    fmt(med(row, 'reqPerSec')),
    `${ok(row).length}/${results.get(row)!.length}`,
  ]),
);
const targets: string[] = [];
if (base && rows.includes('gatehouse-w1')) {
  const r = ratio(med('gatehouse-w1', 'deliveriesPerSec'), med(base, 'deliveriesPerSec'));
  targets.push(`- fan-out at workers: 1 >= 0.8x the relay: ${fmt(r, 2)}x, ${r >= 0.8 ? 'met' : 'NOT met'}`);
}
if (base && rows.includes('gatehouse-w2')) {
  const r = ratio(med('gatehouse-w2', 'deliveriesPerSec'), med(base, 'deliveriesPerSec'));
  targets.push(`- fan-out at workers: 2 > the relay: ${fmt(r, 2)}x, ${r > 1 ? 'met' : 'NOT met'}`);
}
targets.push('', 'Deliveries/s is capped by whichever side saturates first: "load gen busy" near 1.00 means the load generator (1,000 clients in one process) was the limit, and then the proxy CPU per delivery is the figure that compares the proxies.');
const md = [
  '# Hub benchmark (npm run bench:hub)',
  '',
  `${new Date().toISOString()}, Node ${process.version}, ${os.availableParallelism()} CPUs, ${pin ? 'PIN=split: load generator on CPU 0, proxy on CPU 1' : 'not pinned'}.`,
  `${clients} clients (one user each), ${msgs} broadcasts of a ~90-byte JSON message per run; ${reqClients} clients doing sequential requests for ${reqSecs} s; median of ${reps} interleaved reps.`,
  '',
  table,
  '',
  ...targets,
  '',
].join('\n');
process.stdout.write(`\n${md}`);
mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
writeFileSync(path.join(REPO, 'bench/results/hub-latest.md'), md);
writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(Object.fromEntries(results), null, 2));
