/**
 * Diagnostic rows of bench/tls-bulk.ts: the least a Node TLS-terminating proxy does, a
 * `tls.Server` and `pipe()` both ways to a plain backend. It tells what Node's TLS stream costs
 * from what Gatehouse adds. MODE:
 * - `pipe` (default, row `node-tls-pipe`): in the main thread.
 * - `cork` (row `node-tls-cork`): each decrypted chunk forwarded with write() inside a cork lifted
 *   on the next tick, so the 16 KiB records one socket read decrypts go out in one writev.
 * - `worker:N` (row `node-tls-worker`): `pipe` in one worker thread whose young generation is
 *   capped at N MB, as Gatehouse's shard threads are (src/workers/pool.ts).
 * usage: node bench/peers/tls-pipe.ts PORT UP_HOST UP_PORT CERT_FILE KEY_FILE [MODE]   (prints {"ready":true})
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/tls-pipe.ts PORT UP_HOST UP_PORT CERT_FILE KEY_FILE [MODE]';
const port = intArg(process.argv[2], 'PORT', USAGE);
const upHost = process.argv[3] ?? '127.0.0.1';
const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
const cert = readFileSync(process.argv[5] ?? '', 'utf8');
const key = readFileSync(process.argv[6] ?? '', 'utf8');
const mode = process.argv[7] ?? 'pipe';

function serve(onReady: () => void): void {
  const server = tls.createServer({ cert, key, allowHalfOpen: true }, (c) => {
    const b = net.connect({ host: upHost, port: upPort, noDelay: true, allowHalfOpen: true });
    if (mode === 'cork') {
      let corked = false;
      const uncork = (): void => {
        corked = false;
        b.uncork();
      };
      c.on('data', (d: Buffer) => {
        if (!corked) {
          corked = true;
          b.cork();
          process.nextTick(uncork);
        }
        if (!b.write(d)) c.pause();
      });
      b.on('drain', () => c.resume());
      c.on('end', () => b.end());
    } else c.pipe(b);
    b.pipe(c);
    c.on('error', () => b.destroy());
    b.on('error', () => c.destroy());
  });
  server.listen(port, '127.0.0.1', onReady);
}

if (!isMainThread) serve(() => parentPort!.postMessage('ready'));
else {
  exitWithParent();
  if (mode.startsWith('worker:')) {
    const w = new Worker(new URL(import.meta.url), { argv: [...process.argv.slice(2, 7), 'pipe'], resourceLimits: { maxYoungGenerationSizeMb: Number(mode.slice(7)) } });
    w.once('message', () => report({ ready: true }));
  } else serve(() => report({ ready: true }));
}
