/**
 * Bulk backend (suite `tcp`): reads every connection to EOF, then replies with the byte count
 * ("<bytes>\n") and closes, so the client can verify that every byte went through.
 * usage: node bench/backends/tcp-sink.ts PORT      (0 = any free port; prints {"ready":true,"port":N})
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/backends/tcp-sink.ts PORT';
const port = intArg(process.argv[2], 'PORT', USAGE);
exitWithParent();

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  let n = 0;
  s.on('data', (chunk: Buffer) => {
    n += chunk.length;
  });
  s.on('end', () => s.end(`${n}\n`));
  // Health checks and port probes connect and go away: their errors are expected.
  s.on('error', () => s.destroy());
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  report({ ready: true, port: (server.address() as net.AddressInfo).port });
});
