/**
 * Idle TLS connections (the idle part of bench/tls-bulk.ts): bench/load/idle.ts over TLS 1.3.
 * Opens N TLS connections to 127.0.0.1:PORT (verified against CA_FILE for `bench.example`), at
 * most CONCURRENCY handshaking at once; each waits for the backend's 1-byte hello through the
 * TLS-terminating proxy, answers with one byte (so bench/backends/idle-backend.ts counts it as
 * established end to end) and is then held idle.
 * Prints {"phase":"ready",...} once every connection is ready or failed, holds them until the
 * driver stops it or HOLD_S seconds have passed, then closes all. Bounded in count and time.
 * usage: node bench/load/tls-idle.ts PORT N HOLD_S CONNECT_S CA_FILE [CONCURRENCY]
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/load/tls-idle.ts PORT N HOLD_S CONNECT_S CA_FILE [CONCURRENCY]';
const port = intArg(process.argv[2], 'PORT', USAGE);
const n = Math.max(1, intArg(process.argv[3], 'N', USAGE));
const holdS = Math.max(1, intArg(process.argv[4], 'HOLD_S', USAGE));
const connectS = Math.max(1, intArg(process.argv[5], 'CONNECT_S', USAGE));
const ca = readFileSync(process.argv[6] ?? '', 'utf8');
const concurrency = Math.max(1, intArg(process.argv[7] ?? '64', 'CONCURRENCY', USAGE));
exitWithParent();

const answer = Buffer.from('c');
const socks: tls.TLSSocket[] = [];
let started = 0;
let ready = 0;
let failed = 0;
let inflight = 0;
let reported = false;
const errorCodes: Record<string, number> = {};
const t0 = performance.now();
// One client context for every connection (as a real client library keeps one).
const secureContext = tls.createSecureContext({ ca, minVersion: 'TLSv1.3' });

function closeAll(): void {
  for (const s of socks) s.destroy();
}

const setupTimer = setTimeout(() => finishSetup('timeout'), connectS * 1000);

function next(): void {
  while (inflight < concurrency && started < n && !reported) {
    started++;
    inflight++;
    const s = tls.connect({ host: '127.0.0.1', port, secureContext, servername: 'bench.example' });
    socks.push(s);
    let done = false;
    const fin = (ok: boolean, code?: string): void => {
      if (done) return;
      done = true;
      inflight--;
      if (ok) ready++;
      else {
        failed++;
        if (code) errorCodes[code] = (errorCodes[code] ?? 0) + 1;
      }
      if (ready + failed === n) finishSetup('all');
      else next();
    };
    s.once('data', (d: Buffer) => {
      if (d.length !== 1 || d[0] !== 0x68) return fin(false, 'bad hello');
      s.write(answer);
      fin(true);
    });
    s.on('error', (err: NodeJS.ErrnoException) => fin(false, err.code ?? err.message));
    s.once('close', () => fin(false, 'closed'));
  }
}

function finishSetup(why: 'all' | 'timeout'): void {
  if (reported) return;
  reported = true;
  clearTimeout(setupTimer);
  report({ phase: 'ready', ready, failed: failed + (n - ready - failed), timedOut: why === 'timeout', secs: (performance.now() - t0) / 1000, errorCodes });
  setTimeout(() => {
    closeAll();
    report({ phase: 'done', reason: 'hold elapsed' });
    process.exit(0);
  }, holdS * 1000);
}

process.removeAllListeners('SIGTERM');
process.on('SIGTERM', () => {
  closeAll();
  process.exit(0);
});
next();
