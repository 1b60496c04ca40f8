/**
 * TLS bulk sink (the `direct` row of bench/tls-bulk.ts): terminates TLS with the run's
 * certificate and behaves as bench/backends/tcp-sink.ts does, reading every connection to EOF,
 * then replying with the byte count ("<bytes>\n") and closing. It shows what the TLS bulk client
 * can push at one core's worth of decryption: each proxy row must stay below it, or the client
 * is what the rows measure.
 * usage: node bench/backends/tls-sink.ts PORT CERT_FILE KEY_FILE   (prints {"ready":true,"port":N})
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/backends/tls-sink.ts PORT CERT_FILE KEY_FILE';
const port = intArg(process.argv[2], 'PORT', USAGE);
const cert = readFileSync(process.argv[3] ?? '', 'utf8');
const key = readFileSync(process.argv[4] ?? '', 'utf8');
exitWithParent();

const server = tls.createServer({ cert, key, allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (d: Buffer) => {
    n += d.length;
  });
  s.once('end', () => s.end(`${n}\n`));
  s.on('error', () => s.destroy());
});
server.listen(port, '127.0.0.1', () => report({ ready: true, port: (server.address() as { port: number }).port }));
