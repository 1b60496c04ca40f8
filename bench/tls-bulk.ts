/**
 * TLS bulk and idle bench (part of `npm run bench -- --suite tls`): TLS termination on a TCP
 * listener, plaintext to the backend, against HAProxy (mode tcp, `bind ... ssl crt`) and nginx
 * (stream module, `listen ... ssl`), with one EC P-256 certificate made for the run; every row
 * negotiates TLS 1.3 with OpenSSL's default suite order (the table says which suite).
 *
 *   node bench/tls-bulk.ts [--reps N] [--mib N] [--procs N] [--streams N] [--idle-conns N] [--idle-reps N] [--parts bulk,idle] [--rows a,b]
 *
 * bulk: PROCS client processes (bench/load/tls-bulk.ts) × STREAMS TLS streams each upload MIB MiB
 * (1 MiB writes, half-close, byte count verified by bench/backends/tcp-sink.ts), MB/s (10^6 B/s).
 * Rows: `direct` (the clients to bench/backends/tls-sink.ts, a Node TLS sink on the proxy's
 * core: the ceiling of the client side), gatehouse-w1, haproxy, nginx; all started, warmed up,
 * then measured interleaved (rep 1: A B C D, rep 2: B C D A, ...).
 * idle: IDLE_CONNS idle connections through a freshly started proxy per row and rep, plaintext
 * (bench/load/idle.ts) and TLS (bench/load/tls-idle.ts), RSS growth of the proxy per connection
 * (KiB), every connection confirmed at bench/backends/idle-backend.ts first (bench/run.ts's
 * idle method).
 * Pinning (2+ CPUs): proxy on CPU 1, clients and backends on CPU 0. Tables: stdout and
 * bench/results/tls-bulk-latest.md; raw: bench/out/tls-bulk-<time>/.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nofileLimits, treeCpuSeconds, treeRssKiB, waitQuiet } from './lib/cpu.ts';
import { Procs, freePort, waitPort, type Child } from './lib/procs.ts';
import { fmt, max, mdTable, median, min, ratio } from './lib/stats.ts';
import { makeBenchCert } from './lib/tls.ts';
import { tlsFiles, type TlsFiles } from './peers/http-configs.ts';
import { onPath, versionOf } from './rows.ts';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const NODE = process.execPath;

const { values } = parseArgs({
  options: { reps: { type: 'string' }, mib: { type: 'string' }, procs: { type: 'string' }, streams: { type: 'string' }, 'idle-conns': { type: 'string' }, 'idle-reps': { type: 'string' }, parts: { type: 'string' }, rows: { type: 'string' } },
});
const num = (v: string | undefined, def: number, lo: number, hi: number, name: string): number => {
  const n = v === undefined ? def : Number(v);
  if (!(Number.isInteger(n) && n >= lo && n <= hi)) throw new Error(`--${name} must be an integer in [${lo}, ${hi}]`);
  return n;
};
const O = {
  reps: num(values.reps, 3, 1, 20, 'reps'),
  mib: num(values.mib, 256, 8, 4096, 'mib'),
  procs: num(values.procs, 2, 1, 8, 'procs'),
  streams: num(values.streams, 4, 1, 16, 'streams'),
  idleConns: num(values['idle-conns'], 3000, 10, 9_000, 'idle-conns'),
  idleReps: num(values['idle-reps'], 2, 1, 10, 'idle-reps'),
  parts: (values.parts ?? 'bulk,idle').split(','),
  rows: values.rows?.split(','),
};

const twoCpus = os.availableParallelism() >= 2;
const LOAD_CPUS = twoCpus ? '0' : undefined;
const PROXY_CPUS = twoCpus ? '1' : undefined;
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = path.join(HERE, 'out', `tls-bulk-${stamp}`);
mkdirSync(path.join(outDir, 'load'), { recursive: true });
const files = tlsFiles(outDir);
makeBenchCert(files);
const hard = nofileLimits().hard;
const procs = new Procs(outDir, { nofile: Math.min(hard, 1_048_576), prlimit: onPath('prlimit') });
process.on('exit', () => procs.killAllNow());
process.on('SIGINT', () => void procs.stopAll(2_000).then(() => process.exit(130)));
const log = (m: string): void => void process.stdout.write(`${m}\n`);

/** nginx's stream module: builtin, a dynamic module file, or undefined. */
function nginxStream(): string | undefined {
  let v = '';
  try {
    v = execFileSync('sh', ['-c', 'nginx -V 2>&1'], { encoding: 'utf8', timeout: 5_000 });
  } catch {
    return undefined;
  }
  if (/ --with-stream(?!=dynamic)(\s|$)/.test(v)) return 'builtin';
  return ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so'].find((f) => existsSync(f));
}

interface Launch { cmd: string; args: string[]; ready?: RegExp; note: string }
/** A proxy row: how to start it listening on `port` (with TLS or plain) in front of `upPort`. */
interface ProxyRow { name: string; available(): boolean; launch(port: number, upPort: number, tls: TlsFiles | undefined): Launch; tlsOnly?: boolean; /** Only when named in --rows. */ optional?: boolean }

const ROWS: ProxyRow[] = [
  {
    name: 'gatehouse-w1',
    available: () => true,
    launch(port, upPort, tls) {
      const file = path.join(outDir, `gatehouse-${port}.yaml`);
      const t = tls ? `, tls: { certificates: [ { cert: "${tls.cert}", key: "${tls.key}" } ] }` : '';
      writeFileSync(file, ['admin: { listen: "127.0.0.1:0" }', 'runtime: { workers: 1, shutdownTimeout: 5s }', 'log: { level: info }', `upstreams: [ { name: up, backends: [ "127.0.0.1:${upPort}" ], healthCheck: { enabled: false } } ]`, `listeners: [ { name: bench, protocol: tcp, listen: "127.0.0.1:${port}", upstream: up, maxConnections: 100000${t} } ]`, ''].join('\n'));
      return { cmd: NODE, args: [...DAEMON_NODE_FLAGS, path.join(REPO, 'bin/gatehouse.mjs'), 'start', '--config', file], ready: /"msg":"gatehouse started"/, note: 'workers=1' };
    },
  },
  {
    name: 'node-tls-pipe',
    available: () => true,
    tlsOnly: true,
    launch(port, upPort, tls) {
      if (!tls) throw new Error('node-tls-pipe is a TLS row only');
      return { cmd: NODE, args: [path.join(HERE, 'peers/tls-pipe.ts'), String(port), '127.0.0.1', String(upPort), tls.cert, tls.key], ready: /"ready":true/, note: 'tls.Server + pipe(), diagnostic' };
    },
  },
  {
    name: 'node-tls-cork',
    available: () => true,
    tlsOnly: true,
    optional: true,
    launch(port, upPort, tls) {
      if (!tls) throw new Error('node-tls-cork is a TLS row only');
      return { cmd: NODE, args: [path.join(HERE, 'peers/tls-pipe.ts'), String(port), '127.0.0.1', String(upPort), tls.cert, tls.key, 'cork'], ready: /"ready":true/, note: 'tls.Server, write() corked per tick, diagnostic' };
    },
  },
  {
    name: 'node-tls-worker',
    available: () => true,
    tlsOnly: true,
    optional: true,
    launch(port, upPort, tls) {
      if (!tls) throw new Error('node-tls-worker is a TLS row only');
      return { cmd: NODE, args: [path.join(HERE, 'peers/tls-pipe.ts'), String(port), '127.0.0.1', String(upPort), tls.cert, tls.key, 'worker:12'], ready: /"ready":true/, note: 'node-tls-pipe in a worker thread, young generation 12 MB (as a shard), diagnostic' };
    },
  },
  {
    name: 'haproxy',
    available: () => onPath('haproxy'),
    launch(port, upPort, tls) {
      const file = path.join(outDir, `haproxy-${port}.cfg`);
      writeFileSync(file, ['global', '  maxconn 9800', '  nbthread 1', 'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 300s', '  timeout server 300s', 'frontend fe', `  bind 127.0.0.1:${port}${tls ? ` ssl crt ${tls.pem}` : ''}`, '  default_backend be', 'backend be', `  server s1 127.0.0.1:${upPort}`, ''].join('\n'));
      return { cmd: 'haproxy', args: ['-db', '-f', file], note: 'nbthread=1' };
    },
  },
  {
    name: 'nginx',
    available: () => onPath('nginx') && nginxStream() !== undefined,
    launch(port, upPort, tls) {
      const d = path.join(outDir, `nginx-${port}`);
      mkdirSync(d, { recursive: true });
      const mod = nginxStream();
      const ssl = tls ? [`    ssl_certificate ${tls.cert};`, `    ssl_certificate_key ${tls.key};`, '    ssl_protocols TLSv1.2 TLSv1.3;'] : [];
      writeFileSync(path.join(d, 'nginx.conf'), [...(mod && mod !== 'builtin' ? [`load_module ${mod};`] : []), 'worker_processes 1;', 'worker_rlimit_nofile 19500;', 'daemon off;', 'master_process on;', `pid ${d}/nginx.pid;`, `error_log ${d}/error.log warn;`, 'events { worker_connections 9500; }', 'stream {', `  upstream tb { server 127.0.0.1:${upPort}; }`, '  server {', `    listen 127.0.0.1:${port}${tls ? ' ssl' : ''} backlog=4096;`, ...ssl, '    proxy_pass tb;', '    proxy_half_close on;', '  }', '}', ''].join('\n'));
      return { cmd: 'nginx', args: ['-p', d, '-e', `${d}/error.log`, '-c', `${d}/nginx.conf`], note: 'worker_processes=1' };
    },
  },
];

interface Running { name: string; port: number; child: Child; note: string }

async function start(name: string, l: Launch, port: number, tag: string): Promise<Running> {
  const child = procs.spawn(`${tag}-${name}`, l.cmd, l.args, { cpus: PROXY_CPUS });
  if (l.ready) await child.waitLine(l.ready, 30_000);
  await waitPort(port, 30_000, child);
  return { name, port, child, note: l.note };
}

async function startBackend(script: string, args: string[], tag: string, cpus = LOAD_CPUS): Promise<{ child: Child; port: number; ctlPort?: number }> {
  const child = procs.spawn(tag, NODE, [path.join(HERE, script), ...args], { cpus, keepLines: 5 });
  const ready = JSON.parse(await child.waitLine(/"ready":true/, 15_000)) as { port: number; ctlPort?: number };
  return { child, ...ready };
}

// ---------------------------------------------------------------------------------------------
// Bulk

interface BulkSample { row: string; rep: number; mbps: number; ok: boolean; proxyCpuS: number; secs: number; clientCpuS: number; suite: string; errors: string[] }

/** PROCS client processes at once; MB/s = all bytes over the slowest process's time. */
async function bulkLoad(port: number, mib: number, tag: string): Promise<{ mbps: number; ok: boolean; secs: number; clientCpuS: number; suite: string; errors: string[] }> {
  const runs = await Promise.all(
    Array.from({ length: O.procs }, async (_, i) => {
      const c = procs.spawn(`load/${tag}-p${i}`, NODE, [path.join(HERE, 'load/tls-bulk.ts'), String(port), String(O.streams), String(mib), '300', files.cert], { cpus: LOAD_CPUS, keepLines: 5 });
      await c.exited;
      const line = c.lines.find((l) => l.startsWith('{'));
      return line ? (JSON.parse(line) as { ok: boolean; bytes: number; secs: number; clientCpuS: number; protocol: string; cipher: string; errors: string[] }) : { ok: false, bytes: 0, secs: Number.NaN, clientCpuS: Number.NaN, protocol: '', cipher: '', errors: ['no result'] };
    }),
  );
  const secs = Math.max(...runs.map((r) => r.secs));
  return { mbps: runs.reduce((a, r) => a + r.bytes, 0) / secs / 1e6, ok: runs.every((r) => r.ok), secs, clientCpuS: runs.reduce((a, r) => a + r.clientCpuS, 0), suite: `${runs[0]?.protocol} ${runs[0]?.cipher}`, errors: runs.flatMap((r) => r.errors) };
}

async function bulk(): Promise<{ md: string; lines: string[] }> {
  const sink = await startBackend('backends/tcp-sink.ts', ['0'], 'bulk-sink');
  const running: Running[] = [];
  const wanted = (n: string) => !O.rows || O.rows.includes(n);
  if (wanted('direct')) {
    const d = await startBackend('backends/tls-sink.ts', ['0', files.cert, files.key], 'bulk-direct-tls-sink', PROXY_CPUS);
    running.push({ name: 'direct', port: d.port, child: d.child, note: 'Node TLS sink on the proxy core' });
  }
  for (const r of ROWS.filter((x) => (O.rows ? O.rows.includes(x.name) : !x.optional))) {
    if (!r.available()) {
      log(`bulk: ${r.name} not available here, skipped`);
      continue;
    }
    const port = await freePort();
    running.push(await start(r.name, r.launch(port, sink.port, files), port, 'bulk'));
  }
  for (const r of running) {
    const w = await bulkLoad(r.port, 32, `warm-${r.name}`);
    log(`bulk: warm-up ${r.name}: ${fmt(w.mbps, 0)} MB/s ok=${w.ok} ${w.suite}`);
  }
  const samples: BulkSample[] = [];
  for (let rep = 1; rep <= O.reps; rep++) {
    for (let i = 0; i < running.length; i++) {
      const r = running[(i + rep - 1) % running.length]!;
      await waitQuiet(5_000);
      const cpu0 = treeCpuSeconds(r.child.pid);
      const out = await bulkLoad(r.port, O.mib, `bulk-${r.name}-r${rep}`);
      const proxyCpuS = treeCpuSeconds(r.child.pid) - cpu0;
      samples.push({ row: r.name, rep, proxyCpuS, ...out });
      log(`bulk ${r.name} rep${rep}: ${fmt(out.mbps, 0)} MB/s ok=${out.ok} proxy CPU ${fmt((100 * proxyCpuS) / out.secs, 0)}% client CPU ${fmt(out.clientCpuS, 1)} s ${out.suite}${out.errors.length ? ` errors ${out.errors.slice(0, 3).join(',')}` : ''}`);
    }
  }
  for (const r of running) await r.child.stop(5_000);
  await sink.child.stop(3_000);
  const per = (row: string) => samples.filter((s) => s.row === row && s.ok);
  const med = (row: string) => median(per(row).map((s) => s.mbps));
  const cpuPerMb = (row: string) => median(per(row).map((s) => (1e6 * s.proxyCpuS) / ((s.mbps * s.secs) || 1)));
  const rows = running.map((r) => {
    const p = per(r.name);
    return [r.name, fmt(med(r.name), 0), `${fmt(min(p.map((s) => s.mbps)), 0)}–${fmt(max(p.map((s) => s.mbps)), 0)}`, fmt(ratio(med(r.name), med('haproxy')), 2), r.name === 'direct' ? '–' : fmt(cpuPerMb(r.name), 0), r.name === 'direct' ? '–' : fmt(median(p.map((s) => (100 * s.proxyCpuS) / s.secs)), 0), fmt(median(p.map((s) => s.clientCpuS / s.secs * 100)), 0), String(samples.filter((s) => s.row === r.name && !s.ok).length), samples.find((s) => s.row === r.name)?.suite ?? '', r.note];
  });
  const md =
    `### bulk — TLS termination on a tcp listener, plaintext to the backend: ${O.procs} client processes × ${O.streams} TLS streams × ${O.mib} MiB upload (MB/s, median of ${O.reps} runs; ratios: row ÷ haproxy)\n\n` +
    mdTable(['row', 'MB/s median', 'min–max', '÷ haproxy', 'proxy CPU µs/MB', 'proxy CPU %', 'client CPU % (of one core)', 'failed runs', 'negotiated', 'notes'], rows);
  const g = med('gatehouse-w1');
  const lines = [
    `TLS bulk MB/s gatehouse-w1 / haproxy = ${fmt(ratio(g, med('haproxy')), 2)} (target >= 0.9) ${ratio(g, med('haproxy')) >= 0.9 ? 'PASS' : 'MISS'}  (per rep: ${per('gatehouse-w1').map((s) => fmt(ratio(s.mbps, per('haproxy').find((h) => h.rep === s.rep)?.mbps ?? Number.NaN), 2)).join(' ')}); by proxy CPU per MB: ${fmt(ratio(cpuPerMb('haproxy'), cpuPerMb('gatehouse-w1')), 2)}`,
    `TLS bulk MB/s gatehouse-w1 / nginx = ${fmt(ratio(g, med('nginx')), 2)}`,
    `client ceiling: direct ${fmt(med('direct'), 0)} MB/s = ${fmt(ratio(med('direct'), Math.max(...running.filter((r) => r.name !== 'direct').map((r) => med(r.name)))), 2)}x the fastest proxy row${med('direct') < 1.2 * Math.max(...running.filter((r) => r.name !== 'direct').map((r) => med(r.name))) ? ' (NOT well above: the client side limits the rows, ratios are compressed)' : ''}`,
  ];
  return { md, lines };
}

// ---------------------------------------------------------------------------------------------
// Idle

interface Counts { open: number; confirmed: number }
function counts(ctlPort: number): Promise<Counts | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: ctlPort });
    let buf = '';
    const t = setTimeout(() => s.destroy(), 3_000);
    s.setEncoding('utf8');
    s.on('data', (d: string) => (buf += d));
    s.on('error', () => {});
    s.once('close', () => {
      clearTimeout(t);
      try {
        resolve(JSON.parse(buf) as Counts);
      } catch {
        resolve(undefined);
      }
    });
  });
}
async function waitCounts(ctlPort: number, ok: (c: Counts) => boolean, timeoutMs: number): Promise<Counts | undefined> {
  const end = Date.now() + timeoutMs;
  let c: Counts | undefined;
  for (let i = 0; i < 10_000; i++) {
    c = await counts(ctlPort);
    if ((c && ok(c)) || Date.now() > end) return c;
    await sleep(200);
  }
  return c;
}

interface IdleSample { row: string; tls: boolean; rep: number; kib: number; verified: boolean; rss0: number; rss1: number; setupS: number }

async function idleOnce(r: ProxyRow, tls: boolean, rep: number, upPort: number, ctlPort: number): Promise<IdleSample> {
  const port = await freePort();
  const run = await start(r.name, r.launch(port, upPort, tls ? files : undefined), port, `idle-r${rep}-${tls ? 'tls' : 'plain'}`);
  let client: Child | undefined;
  try {
    await sleep(1_000);
    await waitQuiet(5_000);
    const rss0 = treeRssKiB(run.child.pid);
    const n = O.idleConns;
    client = tls
      ? procs.spawn(`load/idle-${r.name}-tls-r${rep}`, NODE, [path.join(HERE, 'load/tls-idle.ts'), String(port), String(n), '200', '120', files.cert], { cpus: LOAD_CPUS, keepLines: 20 })
      : procs.spawn(`load/idle-${r.name}-plain-r${rep}`, NODE, [path.join(HERE, 'load/idle.ts'), String(port), String(n), '200', '120'], { cpus: LOAD_CPUS, keepLines: 20 });
    const ready = JSON.parse(await client.waitLine(/"phase":"ready"/, 150_000)) as { ready: number; secs: number };
    const at = await waitCounts(ctlPort, (c) => c.confirmed >= ready.ready, 15_000);
    await sleep(2_000);
    const rss1 = treeRssKiB(run.child.pid);
    const verified = ready.ready === n && at?.confirmed === n && !run.child.exitInfo;
    const s: IdleSample = { row: r.name, tls, rep, kib: verified ? (rss1 - rss0) / n : Number.NaN, verified, rss0, rss1, setupS: ready.secs };
    log(`idle ${r.name} ${tls ? 'tls' : 'plain'} rep${rep}: ${fmt(s.kib, 2)} KiB/conn${verified ? '' : ' (NOT VERIFIED)'} rss ${fmt(rss0 / 1024, 1)} -> ${fmt(rss1 / 1024, 1)} MiB, setup ${fmt(ready.secs, 1)} s`);
    return s;
  } finally {
    await client?.stop(3_000);
    await waitCounts(ctlPort, (c) => c.confirmed === 0, 15_000);
    await run.child.stop(10_000);
  }
}

async function idle(): Promise<{ md: string; lines: string[] }> {
  const be = await startBackend('backends/idle-backend.ts', ['0'], 'idle-backend');
  const rows = ROWS.filter((r) => (O.rows ? O.rows.includes(r.name) : !r.optional) && r.available());
  const runs = rows.flatMap((r) => (r.tlsOnly ? [true] : [false, true]).map((tls) => ({ r, tls })));
  const samples: IdleSample[] = [];
  for (let rep = 1; rep <= O.idleReps; rep++) {
    for (let i = 0; i < runs.length; i++) {
      const x = runs[(i + rep - 1) % runs.length]!;
      samples.push(await idleOnce(x.r, x.tls, rep, be.port, be.ctlPort!));
    }
  }
  await be.child.stop(3_000);
  const med = (row: string, tls: boolean) => median(samples.filter((s) => s.row === row && s.tls === tls && s.verified).map((s) => s.kib));
  const table = rows.map((r) => [r.name, fmt(med(r.name, false), 2), fmt(med(r.name, true), 2), fmt(ratio(med(r.name, true), med(r.name, false)), 2), fmt(med(r.name, true) - med(r.name, false), 2), String(samples.filter((s) => s.row === r.name && !s.verified).length)]);
  const md =
    `### idle — ${O.idleConns} idle connections through a freshly started proxy, plaintext and TLS 1.3 (handshake done, one byte each way), RSS growth per connection (KiB, median of ${O.idleReps} runs)\n\n` +
    mdTable(['row', 'plain KiB/conn', 'TLS KiB/conn', 'TLS ÷ plain', 'TLS extra KiB', 'unverified runs'], table);
  const g = ratio(med('gatehouse-w1', true), med('gatehouse-w1', false));
  const lines = [
    `memory per idle TLS connection gatehouse-w1 TLS / plain = ${fmt(g, 2)} (target <= 2.0) ${g <= 2 ? 'PASS' : 'MISS'}; TLS gatehouse-w1 / haproxy = ${fmt(ratio(med('gatehouse-w1', true), med('haproxy', true)), 2)}`,
  ];
  return { md, lines };
}

// ---------------------------------------------------------------------------------------------

const t0 = Date.now();
let git = '';
try {
  git = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
} catch {
  git = '?';
}
const facts = `Machine: ${os.availableParallelism()} CPUs, Node ${process.version}, ${versionOf('haproxy', ['-v']) ?? 'no haproxy'}, ${versionOf('sh', ['-c', 'nginx -v 2>&1']) ?? 'no nginx'}, ${versionOf('openssl', ['version']) ?? ''}; pinning: ${twoCpus ? 'clients + backends on CPU 0, proxy on CPU 1' : 'none (1 CPU)'}; git ${git}; certificate EC P-256 self-signed.`;
const parts: { md: string; lines: string[] }[] = [];
try {
  if (O.parts.includes('bulk')) parts.push(await bulk());
  if (O.parts.includes('idle')) parts.push(await idle());
} finally {
  await procs.stopAll(3_000);
}
const cmd = `node bench/tls-bulk.ts ${process.argv.slice(2).join(' ')}`.trim();
const md = `## Gatehouse TLS bulk and idle bench ${new Date().toISOString()}\n\n\`${cmd}\`, ${Math.round((Date.now() - t0) / 1000)} s.\n\n${facts}\n\n${parts.map((p) => p.md).join('\n')}\n\n\`\`\`\nTLS targets (ratios of medians measured in this run):\n${parts.flatMap((p) => p.lines).map((l) => `  ${l}`).join('\n')}\n\`\`\`\n`;
writeFileSync(path.join(outDir, 'report.md'), md);
mkdirSync(path.join(HERE, 'results'), { recursive: true });
writeFileSync(path.join(HERE, 'results', 'tls-bulk-latest.md'), md);
log(`\n${md}`);
process.exit(0);
