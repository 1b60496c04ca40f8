/**
 * Diagnostic row of bench/tls-bulk.ts (`node-tls-pipe`): the least a Node TLS-terminating proxy
 * does, a `tls.Server` and `pipe()` both ways to a plain backend, in one thread. It tells what
 * Node's TLS stream costs from what Gatehouse adds. MODE `cork` instead forwards each decrypted
 * chunk with write() inside a cork that is lifted on the next tick, so the 16 KiB records one
 * socket read decrypts to go to the backend in one writev (what batching would save).
 * usage: node bench/peers/tls-pipe.ts PORT UP_HOST UP_PORT CERT_FILE KEY_FILE [MODE]   (prints {"ready":true})
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/tls-pipe.ts PORT UP_HOST UP_PORT CERT_FILE KEY_FILE';
const port = intArg(process.argv[2], 'PORT', USAGE);
const upHost = process.argv[3] ?? '127.0.0.1';
const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
const cert = readFileSync(process.argv[5] ?? '', 'utf8');
const key = readFileSync(process.argv[6] ?? '', 'utf8');
const mode = process.argv[7] ?? 'pipe';
exitWithParent();

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
server.listen(port, '127.0.0.1', () => report({ ready: true }));
