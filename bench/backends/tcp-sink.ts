/**
 * Bulk backend (suite `tcp`): reads every connection to EOF, then replies with the byte count
 * ("<bytes>\n") and closes, so the client can verify that every byte went through. A connection
 * that starts with `DOWN <bytes>\n` (`--dir down`) is sent that many bytes instead (1 MiB writes
 * with backpressure), then closed.
 * usage: node bench/backends/tcp-sink.ts PORT      (0 = any free port; prints {"ready":true,"port":N})
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/backends/tcp-sink.ts PORT';
const port = intArg(process.argv[2], 'PORT', USAGE);
exitWithParent();

const block = Buffer.alloc(1 << 20, 0x62);

function sendBytes(s: net.Socket, total: number): void {
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const c = left >= block.length ? block : block.subarray(0, left);
      left -= c.length;
      if (!s.write(c)) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  pump();
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  let n = 0;
  let down = false;
  s.on('data', (chunk: Buffer) => {
    if (n === 0 && chunk[0] === 0x44 /* D */ && chunk.toString('latin1', 0, 5) === 'DOWN ') {
      const line = chunk.toString('latin1', 5, chunk.indexOf(10));
      down = true;
      sendBytes(s, Number(line));
    }
    n += chunk.length;
  });
  s.on('end', () => {
    if (!down) s.end(`${n}\n`);
  });
  // Health checks and port probes connect and go away: their errors are expected.
  s.on('error', () => s.destroy());
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  report({ ready: true, port: (server.address() as net.AddressInfo).port });
});
