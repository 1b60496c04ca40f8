/**
 * Churn load generator: CONNS concurrent loops, each one connects, sends the small request,
 * reads the reply to EOF, verifies it byte for byte and closes, then starts again. Runs for
 * DURATION seconds; only connections verified within that window count. Every loop is bounded in
 * time (the window, a per-connection timeout, a global watchdog) and in count (MAX_CONNS).
 * usage: node bench/load/churn.ts PORT CONNS DURATION_S [TIMEOUT_MS]
 * prints one JSON line: { ok, connPerSec, errors, bad, late, started, secs, p50Ms, p99Ms, errorCodes, clientCpuS }
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';
import { CHURN_REPLY, CHURN_REQUEST } from './protocol.ts';

const USAGE = 'node bench/load/churn.ts PORT CONNS DURATION_S [TIMEOUT_MS]';
const port = intArg(process.argv[2], 'PORT', USAGE);
const conns = Math.max(1, intArg(process.argv[3], 'CONNS', USAGE));
const durS = Number(process.argv[4]);
if (!(durS > 0 && durS <= 600)) {
  process.stderr.write(`bad DURATION_S\nusage: ${USAGE}\n`);
  process.exit(2);
}
const timeoutMs = Math.max(100, intArg(process.argv[5] ?? '5000', 'TIMEOUT_MS', USAGE));
exitWithParent();

const MAX_CONNS = 20_000_000;
const MAX_SAMPLES = 4_000_000;
const request = Buffer.from(CHURN_REQUEST);
const expected = CHURN_REPLY;

let ok = 0;
let errors = 0;
let bad = 0;
let late = 0;
let started = 0;
let active = 0;
let finished = false;
const errorCodes: Record<string, number> = {};
const lat = new Float64Array(MAX_SAMPLES);
let nLat = 0;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const tEnd = t0 + durS * 1000;

function one(): void {
  if (finished || started >= MAX_CONNS || performance.now() >= tEnd) {
    if (--active === 0) finish();
    return;
  }
  started++;
  const ts = performance.now();
  let got = '';
  let failed = false;
  const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
  s.setEncoding('latin1');
  s.setTimeout(timeoutMs);
  s.once('connect', () => s.write(request));
  s.on('data', (d: string) => {
    got += d;
    if (got.length > expected.length) s.destroy(new Error('reply too long'));
  });
  s.once('timeout', () => s.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEOUT' })));
  s.on('error', (err: NodeJS.ErrnoException) => {
    failed = true;
    const code = err.code ?? err.message;
    errorCodes[code] = (errorCodes[code] ?? 0) + 1;
  });
  s.once('close', () => {
    const te = performance.now();
    if (failed) errors++;
    else if (got !== expected) bad++;
    else if (te > tEnd) late++;
    else {
      ok++;
      if (nLat < MAX_SAMPLES) lat[nLat++] = te - ts;
    }
    one();
  });
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function finish(): void {
  if (finished) return;
  finished = true;
  const secs = (Math.min(performance.now(), tEnd) - t0) / 1000;
  const sorted = lat.slice(0, nLat).sort();
  const cpu = process.cpuUsage(cpu0);
  report({
    ok,
    connPerSec: ok / durS,
    errors,
    bad,
    late,
    started,
    secs,
    p50Ms: pct(sorted, 50),
    p99Ms: pct(sorted, 99),
    errorCodes,
    clientCpuS: (cpu.user + cpu.system) / 1e6,
  });
  process.exit(0);
}

// Watchdog: the window plus the longest a connection may take, plus slack.
setTimeout(finish, durS * 1000 + timeoutMs + 2_000).unref();
active = conns;
for (let i = 0; i < conns; i++) one();
