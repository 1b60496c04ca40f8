/**
 * HTTP benchmark backend (suite `http`): a raw `net` server that answers every request with a
 * fixed small HTTP/1.1 response, keeping the connection alive. It parses no more than it must so
 * that it is never the bottleneck: a request ends at CRLFCRLF (the bench's requests have no
 * body), pipelined requests in one read are answered with one write, and a request head split
 * over two reads is found through the few bytes carried from the first. A request carrying
 * `Connection: close` (wrk's churn load, direct) gets the same answer with `connection: close`,
 * then the backend ends the connection.
 *
 * Every 16th request head is also checked for `X-Request-Id` and `X-Forwarded-For` (what every
 * proxy row must add). The driver reads the totals from the control port (one JSON object per
 * connection) before and after each measurement, so a proxy row that forwards without those
 * headers is visible in the table. Reads go through `onread` into one buffer of the process
 * (below), so no Buffer is allocated per read.
 *
 * usage: node bench/backends/http-backend.ts PORT   (0 = any free port)
 * prints {"ready":true,"port":N,"ctlPort":M}
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/backends/http-backend.ts PORT';
const port = intArg(process.argv[2], 'PORT', USAGE);
exitWithParent();

/** The body every request gets (13 bytes). */
const HTTP_BODY = 'hello, world\n';
const KEEP = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${HTTP_BODY.length}\r\n\r\n${HTTP_BODY}`);
const CLOSE = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${HTTP_BODY.length}\r\nconnection: close\r\n\r\n${HTTP_BODY}`);
const END = Buffer.from('\r\n\r\n');
/** Answers for 1..MAX_BATCH pipelined requests, built once. */
const MAX_BATCH = 64;
const batches: Buffer[] = [Buffer.alloc(0)];
for (let i = 1; i <= MAX_BATCH; i++) batches.push(Buffer.concat(Array.from({ length: i }, () => KEEP)));

const counts = { connections: 0, requests: 0, sampled: 0, withRequestId: 0, withForwardedFor: 0, closeRequests: 0 };
const SAMPLE_EVERY = 16;

/** Whether a request head asks to close the connection (`Connection: close`, any case). */
function wantsClose(head: string): boolean {
  return /\r\nconnection:[ \t]*close/i.test(head);
}

function sample(head: string): void {
  counts.sampled++;
  if (/\r\nx-request-id:/i.test(head)) counts.withRequestId++;
  if (/\r\nx-forwarded-for:/i.test(head)) counts.withForwardedFor++;
}

/**
 * Handles the bytes of one read of a connection. Returns true: the socket keeps reading even
 * after answering `Connection: close`, so that the client's FIN is seen and the socket closed.
 */
function onBytes(s: net.Socket, st: { carry: Buffer | undefined }, chunk: Buffer): boolean {
  const buf = st.carry ? Buffer.concat([st.carry, chunk]) : chunk;
  st.carry = undefined;
  let n = 0;
  let from = 0;
  let close = false;
  // Where "lose" next occurs: a quick byte test before the regular expression, searched once
  // per read however many requests are pipelined in it.
  let lose = buf.indexOf('lose');
  for (let at = buf.indexOf(END, from); at >= 0; at = buf.indexOf(END, from)) {
    n++;
    counts.requests++;
    const sampleThis = counts.requests % SAMPLE_EVERY === 0;
    if (lose >= 0 && lose < from) lose = buf.indexOf('lose', from);
    const maybeClose = lose >= 0 && lose < at;
    if (sampleThis || maybeClose) {
      const head = buf.toString('latin1', from, at + 2);
      if (sampleThis) sample(head);
      if (maybeClose && wantsClose(head)) {
        close = true;
        counts.closeRequests++;
        from = at + 4;
        break;
      }
    }
    from = at + 4;
  }
  if (!close && from < buf.length) {
    // A copy: the read buffer is reused by the next read.
    st.carry = Buffer.from(buf.subarray(from));
    // A client sending a head over 64 KiB is not one of the bench's load generators.
    if (st.carry.length > 65_536) s.destroy();
  }
  const keep = close ? n - 1 : n;
  for (let left = keep; left > 0; left -= MAX_BATCH) s.write(batches[Math.min(left, MAX_BATCH)]!);
  if (close) s.end(CLOSE);
  return true;
}

// Every connection reads into READ_BUF through net's `onread`: the accepted socket's handle is
// moved into a socket made with `onread`, as Gatehouse does for its own accepted sockets
// (src/net/adopt-socket.ts). Falls back to 'data' events when the handle cannot be taken.
const READ_BUF = Buffer.allocUnsafe(65_536);
const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (accepted) => {
  counts.connections++;
  const st = { carry: undefined as Buffer | undefined };
  const old = accepted as net.Socket & { _handle?: { useUserBuffer?: unknown } | null };
  const handle = old._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') {
    accepted.on('data', (chunk: Buffer) => onBytes(accepted, st, chunk));
    accepted.on('error', () => accepted.destroy());
    accepted.resume();
    return;
  }
  old._handle = null;
  old.destroy();
  const s: net.Socket = new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: { buffer: READ_BUF, callback: (nread: number, buf: Uint8Array) => onBytes(s, st, Buffer.from(buf.buffer, buf.byteOffset, nread)) },
  } as unknown as net.SocketConstructorOpts);
  s.setNoDelay(true);
  s.on('error', () => s.destroy());
  s.resume();
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  const ctl = net.createServer((c) => {
    c.on('error', () => c.destroy());
    c.end(`${JSON.stringify(counts)}\n`);
  });
  ctl.listen({ host: '127.0.0.1', port: 0 }, () => {
    report({ ready: true, port: (server.address() as net.AddressInfo).port, ctlPort: (ctl.address() as net.AddressInfo).port });
  });
});
