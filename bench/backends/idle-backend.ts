/**
 * Idle backend (suite `idle`): on accept it writes a 1-byte hello ("h") and then holds the
 * connection. The client answers the hello with one byte ("c"); a connection that has sent it is
 * *confirmed*: both legs of the proxy carried a byte each way, so it is established end to end.
 * Connections that never send it (health checks, port probes) are not counted.
 * A second port answers every connection with one JSON line of counts and closes, so the driver
 * can check, before it measures, that every client connection is really held at the backend.
 * usage: node bench/backends/idle-backend.ts PORT
 *   (0 = any free port; prints {"ready":true,"port":N,"ctlPort":M}; the control port is always free-picked)
 * control reply: {"open":N,"confirmed":C,"accepted":A,"maxConfirmed":M}  (confirmed = confirmed and still open)
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/backends/idle-backend.ts PORT';
const port = intArg(process.argv[2], 'PORT', USAGE);
exitWithParent();

const hello = Buffer.from('h');
let open = 0;
let accepted = 0;
let confirmed = 0;
let maxConfirmed = 0;
const kConfirmed = Symbol('confirmed');
type S = net.Socket & { [kConfirmed]?: boolean };

const server = net.createServer({ noDelay: true }, (sock) => {
  const s = sock as S;
  open++;
  accepted++;
  s.write(hello);
  s.once('data', () => {
    s[kConfirmed] = true;
    confirmed++;
    if (confirmed > maxConfirmed) maxConfirmed = confirmed;
  });
  s.on('error', () => s.destroy());
  s.once('close', () => {
    open--;
    if (s[kConfirmed]) confirmed--;
  });
});
const ctl = net.createServer((s) => {
  s.on('error', () => s.destroy());
  s.end(`${JSON.stringify({ open, confirmed, accepted, maxConfirmed })}\n`);
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  ctl.listen({ host: '127.0.0.1', port: 0 }, () => {
    report({ ready: true, port: (server.address() as net.AddressInfo).port, ctlPort: (ctl.address() as net.AddressInfo).port });
  });
});
