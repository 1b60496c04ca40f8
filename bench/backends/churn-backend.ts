/**
 * Churn backend (suite `churn`): on a connection's first bytes it replies with a tiny fixed
 * answer and closes (the backend closes first, as an HTTP server with `Connection: close` does).
 * usage: node bench/backends/churn-backend.ts PORT   (0 = any free port; prints {"ready":true,"port":N})
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';
import { CHURN_REPLY } from '../load/protocol.ts';

const USAGE = 'node bench/backends/churn-backend.ts PORT';
const port = intArg(process.argv[2], 'PORT', USAGE);
exitWithParent();

const reply = Buffer.from(CHURN_REPLY);
const server = net.createServer({ noDelay: true }, (s) => {
  s.once('data', () => s.end(reply));
  s.on('error', () => s.destroy());
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  report({ ready: true, port: (server.address() as net.AddressInfo).port });
});
