/**
 * The cluster rate-limit suite (`npm run bench -- --suite cluster-rl`): what sharing a listener's
 * `rateLimit` through Redis leases costs the decisions, and how exact it stays.
 *
 * Each instance is a child process with its own state table, cluster actor and lease client
 * (src/cluster/ratelimit.ts), deciding in its main thread as a `workers: 0` shard does, in a tight
 * loop of `listenerRateAdmit` calls (yielding to the event loop every CHUNK decisions so that its
 * lease traffic runs). Three setups, run --reps times, in a rotating order:
 * - `1 local`: 1 instance without `cluster` (the local GCRA cell);
 * - `3 local`: 3 instances without `cluster`, at once (each its own bucket);
 * - `3 cluster`: 3 instances sharing one bucket through a private redis-server.
 * Per instance, decisions per CPU second (its process's user + system time, Redis I/O included),
 * median over instances, then over reps. The target compares `3 cluster` with `3 local`, which
 * run as many processes on the same cores (on 2 cores, 3 busy processes and Redis slow each
 * other down whatever the limit does): >= 90 %. `3 cluster` ÷ `1 local` is shown too. Also:
 * decisions per wall second, and the cluster's admitted total against its bound (burst + rate ×
 * time + 2 leases per instance).
 *
 *   npm run bench -- --suite cluster-rl [--reps 3] [--dur 3] [--rate 200000]
 *
 * Table: stdout and bench/results/cluster-rl-latest.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ClusterActor } from '../src/cluster/cluster.ts';
import { ClusterRateLimits } from '../src/cluster/ratelimit.ts';
import { leaseSize, listenerRateAdmit, rateParams, setRateAsks } from '../src/cluster/ratelimit-shard.ts';
import { StateTable } from '../src/workers/state-table.ts';
import { fmt, mdTable, median } from './lib/stats.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHUNK = 2_000;
const INSTANCES = 3;

interface Result {
  decisions: number;
  admitted: number;
  cpuS: number;
  wallS: number;
}

/** One instance: decides for `dur` s after the parent says go (a line on stdin), prints a Result. */
async function child(redis: string | undefined, prefix: string, id: string, rate: number, dur: number): Promise<void> {
  process.stdin.on('end', () => process.exit(0));
  const table = StateTable.create();
  const log = pino({ level: 'silent' });
  let cluster: ClusterActor | undefined;
  if (redis) {
    cluster = new ClusterActor({ config: { redis, instanceId: id, keyPrefix: prefix, heartbeat: 1_000, deadAfter: 3_000 }, log }).start();
    const limits = new ClusterRateLimits({ cluster, table, log });
    setRateAsks((asks) => limits.ask(asks));
    while (!limits.on) await new Promise((r) => setTimeout(r, 10));
  }
  process.stdout.write('ready\n');
  await once(process.stdin, 'data');
  const interval = BigInt(Math.round(1e9 / rate));
  const p = rateParams(interval, interval * BigInt(rate));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + dur * 1000;
  let decisions = 0;
  let admitted = 0;
  while (performance.now() < end) {
    for (let i = 0; i < CHUNK; i++) if (listenerRateAdmit(table, 0, 'bench', p)) admitted++;
    decisions += CHUNK;
    await new Promise((r) => setImmediate(r));
  }
  const wallS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const r: Result = { decisions, admitted, cpuS: (cpu.user + cpu.system) / 1e6, wallS };
  process.stdout.write(`${JSON.stringify(r)}\n`);
  cluster?.kill();
  process.exit(0);
}

function startChild(args: string[]): { proc: ChildProcess; lines: AsyncIterator<string> } {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  async function* read(): AsyncGenerator<string> {
    let buf = '';
    for await (const d of proc.stdout!) {
      buf += String(d);
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        yield buf.slice(0, i);
        buf = buf.slice(i + 1);
      }
    }
  }
  return { proc, lines: read() };
}

async function run(redis: string | undefined, n: number, rate: number, dur: number, prefix: string): Promise<Result[]> {
  const kids = Array.from({ length: n }, (_, i) => startChild(['--redis', redis ?? '', '--prefix', prefix, '--id', `i${i}`, '--rate', String(rate), '--dur', String(dur)]));
  for (const k of kids) if ((await k.lines.next()).value !== 'ready') throw new Error('an instance did not start');
  for (const k of kids) k.proc.stdin!.write('go\n');
  const out: Result[] = [];
  for (const k of kids) {
    out.push(JSON.parse((await k.lines.next()).value as string) as Result);
    k.proc.stdin!.end();
  }
  return out;
}

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  s.close();
  return port;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: 'string', default: '3' }, dur: { type: 'string', default: '3' }, rate: { type: 'string', default: '200000' } } });
  const reps = Number(values.reps);
  const dur = Number(values.dur);
  const rate = Number(values.rate);
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let up = '';
  for await (const d of redis.stdout!) if ((up += String(d)).includes('Ready to accept connections')) break;
  redis.stdout!.resume();
  const setups = ['1 local', '3 local', '3 cluster'] as const;
  type Setup = (typeof setups)[number];
  const perCpu = new Map<Setup, number[]>(setups.map((k) => [k, []]));
  const perWall = new Map<Setup, number[]>(setups.map((k) => [k, []]));
  const excess: number[] = [];
  const lease = leaseSize(BigInt(Math.round(1e9 / rate)), rate);
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (let k = 0; k < setups.length; k++) {
        const setup = setups[(k + rep) % setups.length]!;
        const cluster = setup === '3 cluster';
        const rs = await run(cluster ? `redis://127.0.0.1:${port}` : undefined, setup === '1 local' ? 1 : INSTANCES, rate, dur, `bench${process.pid}-${rep}:`);
        perCpu.get(setup)!.push(median(rs.map((r) => r.decisions / r.cpuS)));
        perWall.get(setup)!.push(median(rs.map((r) => r.decisions / r.wallS)));
        if (cluster) {
          const admitted = rs.reduce((a, r) => a + r.admitted, 0);
          excess.push(admitted / (rate + rate * Math.max(...rs.map((r) => r.wallS)) + 2 * lease * INSTANCES));
        }
        console.error(`rep ${rep + 1} ${setup}: ${rs.map((r) => `${fmt(r.decisions / r.cpuS / 1e6, 2)} M/cpu-s, ${r.admitted} admitted`).join('; ')}`);
      }
    }
  } finally {
    redis.kill('SIGTERM');
  }
  const m = (x: Map<Setup, number[]>, k: Setup): number => median(x.get(k)!);
  const pct = (a: number, b: number): string => `${fmt((a / b) * 100, 1)} %`;
  const rows = [
    ['decisions per CPU second', ...setups.map((k) => `${fmt(m(perCpu, k) / 1e6, 2)} M`), `${pct(m(perCpu, '3 cluster'), m(perCpu, '3 local'))} (target >= 90 %)`, pct(m(perCpu, '3 cluster'), m(perCpu, '1 local'))],
    ['decisions per wall second', ...setups.map((k) => `${fmt(m(perWall, k) / 1e6, 2)} M`), pct(m(perWall, '3 cluster'), m(perWall, '3 local')), pct(m(perWall, '3 cluster'), m(perWall, '1 local'))],
    ['admitted ÷ bound', '', '', `${fmt(Math.max(...excess), 3)} (max of ${reps})`, '<= 1', ''],
  ];
  const table = mdTable(['per instance', ...setups, '3 cluster ÷ 3 local', '3 cluster ÷ 1 local'], rows);
  const text = `# Cluster rate limits\n\nrate ${rate}/s, burst ${rate}, lease ${lease}, ${reps} reps of ${dur} s, medians. 2 cores: the ${INSTANCES} instances share them, so per-wall-second numbers fall with CPU sharing; per CPU second is the cost of a decision.\n\n${table}\n`;
  console.log(text);
  mkdirSync(path.join(HERE, 'results'), { recursive: true });
  writeFileSync(path.join(HERE, 'results', 'cluster-rl-latest.md'), text);
}

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  const opt = (name: string): string => argv[argv.indexOf(name) + 1] ?? '';
  await child(opt('--redis') || undefined, opt('--prefix'), opt('--id'), Number(opt('--rate')), Number(opt('--dur')));
} else {
  await main();
}
