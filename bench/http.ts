/**
 * The HTTP benchmark suite (`npm run bench -- --suite http`): HTTP/1.1 reverse proxying through
 * Gatehouse against HAProxy, nginx and two Node proxies, measured in the same run with wrk.
 *
 * Loads (wrk -t1 --latency, every request with `Origin`): keep-alive at 50 and 256 connections,
 * and churn (one request per connection, `Connection: close`) at 50. Rows (bench/rows-http.ts)
 * are started together, warmed up, then measured interleaved, the order rotating every rep, as
 * bench/run.ts does, with its shared-machine guard (a run during which other processes took more
 * than FOREIGN_MAX % of a core is repeated). Then idle: a fresh proxy holds IDLE_CONNS idle
 * keep-alive client connections after one request each; its RSS growth per connection.
 *
 *   npm run bench -- --suite http [--reps 3] [--dur 5] [--rows a,b] [--idle-conns 10000]
 *                                 [--idle-reps 2] [--idle-rows a,b] [--idle-settle 2]
 *   env: PIN=split|none  QUIET_WAIT=5  FOREIGN_MAX=15  TRIES=2  RETRY_BUDGET=400
 *
 * Tables: stdout and bench/results/http-latest.md; raw: bench/out/http-<time>/. See docs/benchmarks.md.
 *
 * With --tls (`npm run bench -- --suite tls`): the TLS suite. The rows (TLS_ROWS: haproxy, nginx,
 * gatehouse-w1) terminate TLS with one EC P-256 certificate made for the run; the backend stays
 * plain HTTP. Loads (TLS_LOADS): full and resumed handshakes (parallel `openssl s_time`, env
 * STIME_PROCS=8), wrk https `Connection: close`, wrk https keep-alive c50; no idle part here.
 * Tables: bench/results/tls-latest.md; raw: bench/out/tls-<time>/. Then bench/tls-bulk.ts runs
 * (same --reps): TLS bulk MB/s through a tcp listener and memory per idle TLS connection
 * (bench/results/tls-bulk-latest.md).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Procs, freePort, waitPort, type Child } from './lib/procs.ts';
import { ForeignCpu, nofileLimits, treeCpuSeconds, treeFds, treeRssKiB, treeSysCpuSeconds, waitQuiet } from './lib/cpu.ts';
import { fmt } from './lib/stats.ts';
import { onPath, rowNodeArgs, versionOf, type Row } from './rows.ts';
import { BENCH_ORIGIN, HTTP_ROWS, LOADS, TLS_LOADS, TLS_ROWS, idleCap, report, type IdleSample, type Load, type Sample } from './rows-http.ts';
import { haproxyStatsSocket, tlsFiles } from './peers/http-configs.ts';
import { gatehouseAdminPort, gatehouseHandshakes, haproxyHandshakes, makeBenchCert, negotiated, sTime, type Handshakes } from './lib/tls.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const NODE = process.execPath;

function options() {
  const str = { type: 'string' } as const;
  const { values } = parseArgs({
    options: { help: { type: 'boolean', short: 'h' }, tls: { type: 'boolean' }, reps: str, dur: str, rows: str, 'idle-conns': str, 'idle-reps': str, 'idle-rows': str, 'idle-settle': str },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*\n| \* ?/gm, '')}\nrows: ${HTTP_ROWS.map((r) => r.name).join(', ')}\n--tls rows: ${TLS_ROWS.map((r) => r.name).join(', ')}\n`);
    process.exit(0);
  }
  const num = (v: string | undefined, name: string, def: number, maxV: number, zero = false): number => {
    const n = v === undefined ? def : Number(v);
    if (!((n > 0 || (zero && n === 0)) && n <= maxV)) throw new Error(`${name} must be a number in ${zero ? '[0' : '(0'}, ${maxV}], got ${JSON.stringify(v)}`);
    return n;
  };
  const list = (v: string | undefined): string[] | undefined => v?.split(',').map((s) => s.trim()).filter(Boolean);
  const tls = values.tls === true;
  const all = tls ? TLS_ROWS : HTTP_ROWS;
  const rows = list(values.rows);
  const idleRows = tls ? [] : (list(values['idle-rows']) ?? ['gatehouse-w1', 'haproxy', 'nginx', 'node-http-undici']);
  for (const n of [...(rows ?? []), ...idleRows]) if (!all.some((r) => r.name === n)) throw new Error(`unknown row ${n} (rows: ${all.map((r) => r.name).join(', ')})`);
  if (!onPath('wrk')) throw new Error('the http suite needs wrk on PATH (apt-get install -y wrk)');
  if (tls && !onPath('openssl')) throw new Error('the tls suite needs openssl on PATH');
  const pin = process.env.PIN ?? 'split';
  if (pin !== 'split' && pin !== 'none') throw new Error(`PIN must be split or none, got ${pin}`);
  return {
    tls,
    allRows: all,
    reps: Math.round(num(values.reps, '--reps', 3, 50)),
    dur: num(values.dur, '--dur', 5, 120),
    rows,
    idleRows,
    idleConns: Math.round(num(values['idle-conns'], '--idle-conns', 10_000, 100_000)),
    idleReps: tls ? 0 : Math.round(num(values['idle-reps'], '--idle-reps', 2, 20, true)),
    idleSettleS: num(values['idle-settle'], '--idle-settle', 2, 120),
    pin,
    quietWaitS: num(process.env.QUIET_WAIT, 'QUIET_WAIT', 5, 600),
    foreignMax: num(process.env.FOREIGN_MAX, 'FOREIGN_MAX', 15, 10_000),
    tries: Math.round(num(process.env.TRIES, 'TRIES', 2, 10)),
    retryUntil: Date.now() + 1000 * num(process.env.RETRY_BUDGET, 'RETRY_BUDGET', 400, 86_400),
  };
}

type HttpOptions = ReturnType<typeof options>;

/** Where the load side and the proxies run (bench/run.ts's PIN=split on 2+ CPUs, else nothing pinned). */
interface PinPlan { loadCpus: string | undefined; proxyCpus: string | undefined; peerThreads: number; note: string }

function pinPlan(want: string): PinPlan {
  const n = os.availableParallelism();
  if (want === 'split' && n >= 2 && onPath('taskset')) return { loadCpus: '0', proxyCpus: '1', peerThreads: 1, note: 'split: wrk + backend on CPU 0, proxy on CPU 1' };
  return { loadCpus: undefined, proxyCpus: undefined, peerThreads: n, note: `none (${want === 'none' ? 'PIN=none' : 'no taskset or 1 CPU'}): nothing pinned` };
}

/** A row started for the suite: its port (the backend's for `direct`), process, and why it failed. */
interface RunningRow { row: Row; port: number; child: Child | undefined; note: string; failed?: string; negotiated?: string; tag?: string }

/** The TLS suite: rows speak https (set once by main from --tls). */
let TLS = false;
const log = (msg: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
let procs: Procs;

interface Counts { requests: number; sampled: number; withRequestId: number; withForwardedFor: number }

/** The http backend's counts (bench/backends/http-backend.ts), from its control port. Bounded. */
function backendCounts(ctlPort: number): Promise<Counts | undefined> {
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

/** One GET through a row: undefined when it answers 200 with the backend's body, else what it did. Bounded. */
function checkRow(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const get = TLS ? https.get : http.get;
    const req = get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5_000, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 && body === 'hello, world\n' ? undefined : `answered ${res.statusCode} ${JSON.stringify(body.slice(0, 80))}`));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (err) => resolve(`request failed: ${err.message}`));
  });
}

/** Starts one row pinned to the proxy CPUs and waits until it answers a request with the backend's body. */
async function startRow(row: Row, upPort: number, plan: PinPlan, dir: string, tag: string): Promise<RunningRow> {
  if (row.direct || !row.launch) return { row, port: upPort, child: undefined, note: '' };
  const port = await freePort();
  const l = row.launch({ listenPort: port, upHost: '127.0.0.1', upPort, dir, peerThreads: plan.peerThreads, node: NODE, repo: REPO });
  const extra = l.cmd === NODE ? rowNodeArgs(row.name) : [];
  const child = procs.spawn(`${tag}-row-${row.name}`, l.cmd, [...extra, ...l.args], { cpus: plan.proxyCpus });
  const rr: RunningRow = { row, port, child, tag, note: [l.note ?? '', extra.length ? `node ${extra.join(' ')}` : ''].filter(Boolean).join(', ') };
  try {
    if (l.readyLine) await child.waitLine(l.readyLine, 30_000);
    await waitPort(port, 30_000, child);
    const bad = await checkRow(port);
    if (bad) throw new Error(bad);
    if (TLS) rr.negotiated = negotiated(port);
    log(`${tag}: row ${row.name} ready on 127.0.0.1:${port} (pid ${child.pid}${l.note ? `, ${l.note}` : ''})`);
  } catch (err) {
    rr.failed = `did not start: ${(err as Error).message}`;
    log(`${tag}: row ${row.name} ${rr.failed}`);
    await child.stop(3_000);
  }
  return rr;
}

/** Runs wrk (pinned with the backend) for one load and returns its report. Bounded by -d plus 20 s. */
async function wrk(plan: PinPlan, tag: string, port: number, load: Load, durS: number): Promise<string> {
  const args = ['-t1', `-c${load.conns}`, `-d${durS}s`, '--latency', '-H', `Origin: ${BENCH_ORIGIN}`, ...(load.close ? ['-H', 'Connection: close'] : []), `${TLS ? 'https' : 'http'}://127.0.0.1:${port}/`];
  const c = procs.spawn(`load/${tag}`, 'wrk', args, { cpus: plan.loadCpus, keepLines: 200 });
  const timer = setTimeout(() => void c.stop(2_000), durS * 1000 + 20_000);
  await c.exited;
  clearTimeout(timer);
  return c.lines.join('\n');
}

/** wrk's figures: requests, seconds, non-2xx/3xx responses, socket errors, latency percentiles. */
function parseWrk(out: string): Pick<Sample, 'requests' | 'secs' | 'non2xx' | 'sockErrors' | 'p50Ms' | 'p99Ms'> {
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? Number.NaN);
  const ms = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    return m ? Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : 1) : Number.NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const requests = num(/(\d+) requests in/);
  if (!Number.isFinite(requests)) throw new Error(`wrk: no result:\n${out}`);
  return {
    requests,
    secs: num(/requests in ([\d.]+)s/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    sockErrors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    p50Ms: ms('50'),
    p99Ms: ms('99'),
  };
}

/** The handshakes the row's proxy has counted so far (Gatehouse's metrics, HAProxy's stats socket), if it tells. */
async function serverHandshakes(rr: RunningRow, dir: string): Promise<Handshakes | undefined> {
  if (rr.row.name === 'haproxy') return haproxyHandshakes(haproxyStatsSocket(dir, rr.port));
  if (!rr.row.name.startsWith('gatehouse')) return undefined;
  const admin = gatehouseAdminPort(path.join(dir, `${rr.tag}-row-${rr.row.name}.log`));
  return admin === undefined ? undefined : gatehouseHandshakes(admin);
}

/** A TLS handshake load: s_time's figures in wrk's shape (no latencies), with the share it saw resumed. */
async function stimeLoad(plan: PinPlan, tag: string, port: number, load: Load, durS: number): Promise<Pick<Sample, 'requests' | 'secs' | 'non2xx' | 'sockErrors' | 'p50Ms' | 'p99Ms' | 'clientResumedPct'>> {
  const r = await sTime(procs, tag, port, load.stime!, load.conns, durS, plan.loadCpus);
  if (!Number.isFinite(r.rate)) throw new Error(`s_time: no result:\n${r.out.slice(-2000)}`);
  return { requests: r.conns, secs: r.conns / r.rate, non2xx: 0, sockErrors: r.failed, p50Ms: Number.NaN, p99Ms: Number.NaN, clientResumedPct: (100 * r.resumed) / Math.max(1, r.resumed + r.full) };
}

/** One measurement of a row under a load, repeated (up to TRIES) while other tenants took too much CPU. */
async function measure(load: Load, rr: RunningRow, rep: number, o: HttpOptions, plan: PinPlan, ctlPort: number, dir: string): Promise<Sample[]> {
  const tries: Sample[] = [];
  for (let attempt = 1; attempt <= o.tries; attempt++) {
    if (rr.child?.exitInfo) {
      rr.failed = `exited during the run (code ${rr.child.exitInfo.code}, signal ${rr.child.exitInfo.signal})`;
      break;
    }
    const preBusyPct = await waitQuiet(o.quietWaitS * 1000);
    const c0 = await backendCounts(ctlPort);
    const foreign = new ForeignCpu();
    foreign.start();
    const pid = rr.child?.pid ?? -1;
    const cpu0 = rr.child ? treeCpuSeconds(pid) : Number.NaN;
    const sys0 = rr.child ? treeSysCpuSeconds(pid) : Number.NaN;
    const h0 = TLS ? await serverHandshakes(rr, dir) : undefined;
    const tag = `${load.name}-${rr.row.name}-r${rep}-t${attempt}`;
    const w: ReturnType<typeof parseWrk> & { clientResumedPct?: number } = load.stime ? await stimeLoad(plan, tag, rr.port, load, o.dur) : parseWrk(await wrk(plan, tag, rr.port, load, o.dur));
    const cpuS = (rr.child ? treeCpuSeconds(pid) : Number.NaN) - cpu0;
    const sysS = (rr.child ? treeSysCpuSeconds(pid) : Number.NaN) - sys0;
    const foreignPct = foreign.stop();
    const c1 = await backendCounts(ctlPort);
    const h1 = h0 ? await serverHandshakes(rr, dir) : undefined;
    const hs = h0 && h1 ? { full: h1.full - h0.full, resumed: h1.resumed - h0.resumed } : undefined;
    const d = (k: keyof Counts): number => (c0 && c1 ? c1[k] - c0[k] : Number.NaN);
    const s: Sample = {
      ...w, load: load.name, row: rr.row.name, rep, try: attempt, kept: false, rps: (w.requests - w.non2xx) / w.secs,
      cpuUsPerReq: (1e6 * cpuS) / w.requests, sysUsPerReq: (1e6 * sysS) / w.requests, cpuPct: (100 * cpuS) / w.secs,
      foreignPct, stealPct: foreign.stealPct, preBusyPct,
      sampled: d('sampled'), withRequestId: d('withRequestId'), withForwardedFor: d('withForwardedFor'),
      ...(TLS ? { clientResumedPct: w.clientResumedPct ?? Number.NaN, serverResumedPct: hs ? (100 * hs.resumed) / Math.max(1, hs.full + hs.resumed) : Number.NaN } : {}),
    };
    tries.push(s);
    log(
      `${load.name} ${rr.row.name} rep${rep}${attempt > 1 ? ` try${attempt}` : ''}: ${fmt(s.rps, 0)} req/s p99 ${fmt(s.p99Ms, 2)} ms ` +
        `errors ${s.non2xx}+${s.sockErrors}${TLS ? ` resumed% client ${fmt(s.clientResumedPct ?? Number.NaN, 0)} server ${fmt(s.serverResumedPct ?? Number.NaN, 0)}${hs ? ` (${hs.full} full, ${hs.resumed} resumed)` : ''}` : ''} proxyCPU ${fmt(s.cpuPct, 0)}% ${fmt(s.cpuUsPerReq, 1)} µs/req foreign ${fmt(foreignPct, 0)}% steal ${fmt(s.stealPct, 0)}%`,
    );
    if (foreignPct <= o.foreignMax || Date.now() > o.retryUntil) break;
    if (attempt < o.tries) log(`  foreign CPU ${fmt(foreignPct, 0)}% > ${o.foreignMax}%: repeating`);
  }
  const best = tries.reduce<Sample | undefined>((b, s) => (!b || s.foreignPct < b.foreignPct ? s : b), undefined);
  if (best) best.kept = true;
  return tries;
}

/**
 * One idle run: the client (bench/peers/http-idle-client.ts, pinned with the backend) opens `n`
 * connections through the fresh proxy `rr`, one request each, and holds them; RSS and fds of the
 * proxy are read before and `--idle-settle` s after they are all ready.
 */
async function idleOnce(rr: RunningRow, rep: number, n0: number, o: HttpOptions, plan: PinPlan): Promise<IdleSample> {
  const pid = rr.child!.pid;
  const n = Math.min(n0, idleCap(rr.row.name));
  await sleep(1_000);
  await waitQuiet(o.quietWaitS * 1000);
  const foreign = new ForeignCpu();
  foreign.start();
  const rss0KiB = treeRssKiB(pid);
  const fds0 = treeFds(pid);
  const cpu0 = treeCpuSeconds(pid);
  const client = procs.spawn(`load/idle-${rr.row.name}-r${rep}`, NODE, [path.join(HERE, 'peers/http-idle-client.ts'), String(rr.port), String(n), '120', '60'], { cpus: plan.loadCpus, keepLines: 20 });
  try {
    const r = JSON.parse(await client.waitLine(/"phase":"ready"/, 80_000)) as { ready: number; secs: number; errorCodes: Record<string, number> };
    const cpu1 = treeCpuSeconds(pid);
    await sleep(o.idleSettleS * 1000);
    const rss1KiB = treeRssKiB(pid);
    const fds1 = treeFds(pid);
    await client.stop(5_000);
    const done = [...client.lines].reverse().find((l) => l.includes('"phase":"done"'));
    const open = done ? Number((JSON.parse(done) as { open: number }).open) : Number.NaN;
    const verified = r.ready === n && open === n && !rr.child!.exitInfo && Number.isFinite(rss1KiB - rss0KiB);
    const s: IdleSample = {
      row: rr.row.name, rep, value: verified ? (rss1KiB - rss0KiB) / open : Number.NaN, verified, n, ready: r.ready, open,
      rss0KiB, rss1KiB, fds0, fds1, secs: r.secs, setupCpuUsPerConn: (1e6 * (cpu1 - cpu0)) / Math.max(1, r.ready),
      foreignPct: foreign.stop(), errorCodes: r.errorCodes,
    };
    log(
      `idle ${rr.row.name} rep${rep}: ${fmt(s.value, 2)} KiB/conn${verified ? '' : ' (NOT VERIFIED)'} ready ${r.ready}/${n} open ${open} ` +
        `rss ${fmt(rss0KiB / 1024, 1)} -> ${fmt(rss1KiB / 1024, 1)} MiB fds ${fds0} -> ${fds1} setup ${fmt(r.secs, 1)} s`,
    );
    return s;
  } finally {
    await client.stop(5_000);
  }
}

async function main(): Promise<number> {
  const o = options();
  TLS = o.tls;
  const suite = o.tls ? 'tls' : 'http';
  const loads = o.tls ? TLS_LOADS : LOADS;
  const plan = pinPlan(o.pin);
  const t0 = Date.now();
  const stamp = new Date().toISOString().replace(/[:]/g, '').replace(/\..*/, '');
  const outDir = path.join(HERE, 'out', `${suite}-${stamp}`);
  mkdirSync(path.join(outDir, 'load'), { recursive: true });
  const { soft, hard } = nofileLimits();
  const nofile = Number.isFinite(hard) ? hard : undefined;
  procs = new Procs(outDir, { nofile, prlimit: onPath('prlimit') });
  installShutdown();
  if (o.tls) makeBenchCert(tlsFiles(outDir));

  const wanted = o.allRows.filter((r) => !o.rows || o.rows.includes(r.name)).filter((r) => !r.optional || o.rows?.includes(r.name));
  const skipped: string[] = [];
  const avail = (r: Row): boolean => {
    const why = r.unavailable?.();
    if (why && !skipped.some((s) => s.startsWith(`${r.name}:`))) skipped.push(`${r.name}: ${why}`);
    return !why;
  };
  const rows = wanted.filter(avail);
  log(`${suite} bench: rows=${rows.map((r) => r.name).join(',')} reps=${o.reps} dur=${o.dur}s pin=${plan.note}; output ${path.relative(REPO, outDir)}/`);
  if (skipped.length) log(`skipped rows: ${skipped.join('; ')}`);

  const backend = procs.spawn('http-backend', NODE, [path.join(HERE, 'backends/http-backend.ts'), '0'], { cpus: plan.loadCpus, keepLines: 5 });
  const ready = JSON.parse(await backend.waitLine(/"ready":true/, 15_000)) as { port: number; ctlPort: number };
  log(`backend on 127.0.0.1:${ready.port} (control ${ready.ctlPort}, pid ${backend.pid})`);

  const running: RunningRow[] = [];
  for (const row of rows) running.push(await startRow(row, ready.port, plan, outDir, suite));
  const live = (): RunningRow[] => running.filter((r) => !r.failed);
  for (const rr of live()) {
    for (const load of o.tls ? TLS_LOADS.filter((l) => !l.stime) : [LOADS[0]!, LOADS[1]!]) {
      try {
        parseWrk(await wrk(plan, `warm-${load.name}-${rr.row.name}`, rr.port, load, Math.min(2, o.dur)));
      } catch (err) {
        log(`warm-up of ${rr.row.name}: ${(err as Error).message}`);
      }
    }
  }
  log(`warmed up; measuring ${o.reps} reps × ${loads.length} loads × ${live().length} rows, interleaved`);
  const samples: Sample[] = [];
  for (let rep = 1; rep <= o.reps; rep++) {
    for (const load of loads) {
      const order = live();
      const shift = (rep - 1) % Math.max(1, order.length);
      for (const rr of [...order.slice(shift), ...order.slice(0, shift)]) {
        try {
          samples.push(...(await measure(load, rr, rep, o, plan, ready.ctlPort, outDir)));
        } catch (err) {
          log(`${load.name} ${rr.row.name} rep${rep}: ${(err as Error).message}`);
        }
      }
    }
  }
  await Promise.all(running.map((r) => r.child?.stop(10_000)));

  // Idle: a fresh proxy per row and rep; N lowered to fit the open-files limit the children get
  // (1 fd per client connection in the proxy, a few pooled upstream connections, its own files).
  const fit = Math.floor((nofile ?? 1 << 20) - 500);
  const n = Math.min(o.idleConns, fit);
  const idleNote = `open files: soft ${soft}, hard ${hard}${n < o.idleConns ? `; --idle-conns lowered from ${o.idleConns} to ${n}` : ''}`;
  const idleRows = HTTP_ROWS.filter((r) => o.idleRows.includes(r.name) && !r.direct && avail(r));
  const idle: IdleSample[] = [];
  const idleFailed = new Map<string, string>();
  for (let rep = 1; rep <= o.idleReps; rep++) {
    const shift = (rep - 1) % Math.max(1, idleRows.length);
    for (const row of [...idleRows.slice(shift), ...idleRows.slice(0, shift)]) {
      const rr = await startRow(row, ready.port, plan, outDir, `idle-r${rep}`);
      if (rr.failed || !rr.child) {
        idleFailed.set(row.name, rr.failed ?? 'did not start');
        continue;
      }
      try {
        idle.push(await idleOnce(rr, rep, n, o, plan));
      } catch (err) {
        log(`idle ${row.name} rep${rep}: ${(err as Error).message}`);
      } finally {
        await rr.child.stop(10_000);
      }
    }
  }
  await backend.stop(5_000);

  const sh = (cmd: string): string => execFileSync('sh', ['-c', `${cmd}; true`], { encoding: 'utf8', cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const facts = {
    date: new Date().toISOString(), nproc: os.availableParallelism(), kernel: os.release(), node: process.version,
    haproxy: versionOf('haproxy', ['-v']), nginx: onPath('nginx') ? versionOf('sh', ['-c', 'nginx -v 2>&1']) : undefined,
    wrk: sh('wrk -v 2>&1').split('\n')[0]?.split(' [')[0], git: sh('git rev-parse --short HEAD'),
    gitDirtySrc: Number(sh('git status --porcelain -- src | wc -l')), pin: plan.note, idle: idleNote, elapsedS: (Date.now() - t0) / 1000,
    ...(o.tls ? { openssl: sh('openssl version'), stimeProcs: TLS_LOADS[0]!.conns } : {}),
  };
  const argv = process.argv.slice(2).filter((a) => a !== '--tls');
  const cmd = `npm run bench -- --suite ${suite}${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`;
  const tls = o.tls ? { negotiated: new Map(running.map((r) => [r.row.name, r.negotiated ?? r.failed ?? '?'] as const)) } : undefined;
  const md = report({ o, facts, cmd: `${process.env.PIN ? `PIN=${process.env.PIN} ` : ''}${cmd}`, running, skipped, samples, idle, idleRows: idleRows.map((r) => r.name), idleFailed, n, ...(tls ? { tls } : {}) });
  process.stdout.write(`\n${md}`);
  writeFileSync(path.join(outDir, 'table.md'), md);
  mkdirSync(path.join(HERE, 'results'), { recursive: true });
  writeFileSync(path.join(HERE, 'results', `${suite}-latest.md`), md);
  writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify({ facts, options: { ...o, allRows: undefined }, skipped, samples, idle }, null, 2)}\n`);
  log(`wrote bench/results/${suite}-latest.md and ${path.relative(REPO, outDir)}/results.json (${fmt((Date.now() - t0) / 1000, 0)} s)`);
  if (o.tls) {
    // The TLS suite's second part: bulk MB/s through a tcp listener and memory per idle TLS
    // connection (bench/tls-bulk.ts), once this part's processes are gone.
    await procs.stopAll(5_000);
    return spawnSync(process.execPath, [path.join(HERE, 'tls-bulk.ts'), '--reps', String(o.reps)], { stdio: 'inherit' }).status ?? 1;
  }
  return 0;
}

let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await procs?.stopAll(5_000);
  }
  process.exit(code);
}

function installShutdown(): void {
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(sig, () => {
      if (stopping) {
        procs.killAllNow();
        process.exit(code);
      }
      log(`${sig}: stopping`);
      void shutdown(code);
    });
  }
  process.on('exit', () => procs?.killAllNow());
}

main().then(
  (code) => shutdown(code),
  (err: unknown) => {
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return shutdown(1);
  },
);
