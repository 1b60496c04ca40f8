/**
 * The client side of the HTTP suite's idle measurement (bench/http.ts): opens N keep-alive
 * connections to 127.0.0.1:PORT (at most CONCURRENCY connecting at once), sends one GET on each,
 * checks the answer is the backend's (`200`, body `hello, world`), then holds the connection
 * idle. Prints {"phase":"ready",...} once every connection is ready or failed, holds them until
 * the driver stops it (SIGTERM or its stdin closing; it then prints how many were still open) or
 * HOLD_S seconds have passed. Bounded in count (N) and time (CONNECT_S, HOLD_S).
 * usage: node bench/peers/http-idle-client.ts PORT N [HOLD_S] [CONNECT_S] [CONCURRENCY]
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/http-idle-client.ts PORT N [HOLD_S] [CONNECT_S] [CONCURRENCY]';
const port = intArg(process.argv[2], 'PORT', USAGE);
const n = Math.max(1, intArg(process.argv[3], 'N', USAGE));
const holdS = Math.max(1, intArg(process.argv[4] ?? '120', 'HOLD_S', USAGE));
const connectS = Math.max(1, intArg(process.argv[5] ?? '60', 'CONNECT_S', USAGE));
const concurrency = Math.max(1, intArg(process.argv[6] ?? '256', 'CONCURRENCY', USAGE));
exitWithParent();

const REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
const BODY = 'hello, world\n';
const socks: net.Socket[] = [];
let started = 0;
let ready = 0;
let failed = 0;
let inflight = 0;
let open = 0;
let reported = false;
const errorCodes: Record<string, number> = {};
const t0 = performance.now();
const setupTimer = setTimeout(() => finishSetup('timeout'), connectS * 1000);

function next(): void {
  while (inflight < concurrency && started < n && !reported) {
    started++;
    inflight++;
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    socks.push(s);
    let got = '';
    let done = false;
    let connected = false;
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
    s.once('connect', () => {
      connected = true;
      open++;
      s.write(REQUEST);
    });
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      if (done) return;
      got += d;
      // The whole answer has come once the body has (the proxies add their own fields before it).
      if (!got.endsWith(BODY)) return void (got.length > 65_536 && fin(false, 'answer too long'));
      fin(got.startsWith('HTTP/1.1 200 '), got.startsWith('HTTP/1.1 200 ') ? undefined : `status ${got.slice(9, 12)}`);
      got = '';
    });
    s.on('error', (err: NodeJS.ErrnoException) => fin(false, err.code ?? err.message));
    s.once('close', () => {
      if (connected) open--;
      fin(false, 'closed');
    });
  }
}

function finishSetup(why: 'all' | 'timeout'): void {
  if (reported) return;
  reported = true;
  clearTimeout(setupTimer);
  report({ phase: 'ready', ready, failed: n - ready, timedOut: why === 'timeout', secs: (performance.now() - t0) / 1000, errorCodes });
  setTimeout(() => stop('hold elapsed'), holdS * 1000);
}

function stop(reason: string): void {
  report({ phase: 'done', reason, open });
  for (const s of socks) s.destroy();
  process.exit(0);
}

process.removeAllListeners('SIGTERM');
process.on('SIGTERM', () => stop('SIGTERM'));
next();
