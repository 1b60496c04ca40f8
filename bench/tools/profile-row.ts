/**
 * CPU-profiles one Node row under bench load: starts the suite's backend and the row with
 * `node --cpu-prof` (pinned as in bench/run.ts), waits, runs one load, stops the row with SIGTERM
 * (Gatehouse drains and exits 0, which writes one .cpuprofile per thread), then prints the top
 * self-time functions of each profile with µs per connection (churn) or per MB (tcp).
 *   node bench/tools/profile-row.ts --row gatehouse-w1 [--suite churn|tcp] [--dur 10] [--conns 50] [--mib 512]
 * Profiles and logs: bench/out/profile-<row>-<time>/.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Procs, freePort, waitPort } from '../lib/procs.ts';
import { processCpuSeconds } from '../lib/cpu.ts';
import { ROWS, onPath } from '../rows.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BENCH = path.resolve(HERE, '..');
const REPO = path.resolve(BENCH, '..');
const NODE = process.execPath;

const { values } = parseArgs({
  options: {
    row: { type: 'string' },
    suite: { type: 'string', default: 'churn' },
    dur: { type: 'string', default: '10' },
    conns: { type: 'string', default: '50' },
    mib: { type: 'string', default: '512' },
    top: { type: 'string', default: '25' },
  },
});
const row = ROWS.find((r) => r.name === values.row);
if (!row?.launch || !['churn', 'tcp'].includes(values.suite!)) {
  process.stderr.write(`usage: node bench/tools/profile-row.ts --row ${ROWS.filter((r) => r.launch).map((r) => r.name).join('|')} [--suite churn|tcp] [--dur S] [--conns N] [--mib N]\n`);
  process.exit(2);
}
const pinned = onPath('taskset') && (process.env.PIN ?? 'split') === 'split';
const [loadCpus, proxyCpus] = pinned ? ['0', '1'] : [undefined, undefined];
const dir = path.join(BENCH, 'out', `profile-${row.name}-${values.suite}-${new Date().toISOString().replace(/[:]/g, '').replace(/\..*/, '')}`);
mkdirSync(dir, { recursive: true });
const procs = new Procs(dir);
process.on('SIGINT', () => void procs.stopAll(3_000).then(() => process.exit(130)));
process.on('exit', () => procs.killAllNow());

try {
  const churn = values.suite === 'churn';
  const backend = procs.spawn('backend', NODE, [path.join(BENCH, churn ? 'backends/churn-backend.ts' : 'backends/tcp-sink.ts'), '0'], { cpus: loadCpus });
  const upPort = Number((JSON.parse(await backend.waitLine(/"ready":true/, 15_000)) as { port: number }).port);
  const port = await freePort();
  const l = row.launch({ listenPort: port, upHost: '127.0.0.1', upPort, dir, peerThreads: 1, node: NODE, repo: REPO });
  if (l.cmd !== NODE) throw new Error(`${row.name} is not a Node row`);
  const proxy = procs.spawn('row', NODE, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...l.args], { cpus: proxyCpus });
  if (l.readyLine) await proxy.waitLine(l.readyLine, 30_000);
  await waitPort(port, 30_000, proxy);
  await sleep(1_000);
  const since = process.hrtime.bigint() / 1000n;
  const cpu0 = processCpuSeconds(proxy.pid);
  const args = churn
    ? [path.join(BENCH, 'load/churn.ts'), String(port), values.conns!, values.dur!]
    : [path.join(BENCH, 'load/bulk.ts'), String(port), '4', values.mib!];
  const load = procs.spawn('load', NODE, args, { cpus: loadCpus, keepLines: 5 });
  await load.exited;
  const until = process.hrtime.bigint() / 1000n;
  const cpu = processCpuSeconds(proxy.pid) - cpu0;
  const res = JSON.parse(load.lines.at(-1) ?? '{}') as Record<string, number>;
  const units = churn ? res.started! : res.bytes! / 1e6;
  process.stdout.write(`load: ${JSON.stringify(res)}\nproxy CPU during load: ${cpu.toFixed(2)} s = ${((cpu * 1e6) / units).toFixed(1)} µs per ${churn ? 'connection' : 'MB'}\n`);
  await proxy.stop(15_000);
  await procs.stopAll(3_000);
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile')).sort()) {
    execFileSync(NODE, [path.join(HERE, 'cpuprofile-top.ts'), path.join(dir, f), '--top', values.top!, '--since', String(since), '--until', String(until), '--per', String(Math.round(units))], { stdio: 'inherit' });
  }
  process.stdout.write(`\nprofiles in ${path.relative(REPO, dir)}/\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exitCode = 1;
} finally {
  await procs.stopAll(3_000);
}
