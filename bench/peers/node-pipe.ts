/**
 * Rows `node-pipe*`: the plain Node proxy, net server + `pipe()` both ways (the common
 * shape of a hand-written Node TCP proxy). THREADS=0 (default): the main thread only, the baseline
 * Gatehouse is compared to; THREADS=N: N worker threads binding the port with `reusePort` (the
 * same shape as Gatehouse's data plane, to tell thread costs from Gatehouse's own).
 * MODE=pipe (default) or fwd: forward with event handlers shared by every connection (the socket
 * points to its peer; `data` writes to the peer and pauses on backpressure, the peer's `drain`
 * resumes, `end` is passed on) instead of `pipe()`, which makes ~9 closures per direction per
 * connection. `fwd` is a diagnostic (optional row node-pipe-fwd), not a peer.
 * MODE=hot (diagnostic, row node-pipe-hot): as fwd, but every socket reads into its own reused
 * buffer of HOT_BUF_KIB KiB (default 64) through Node's `onread` user-buffer path instead of a
 * fresh 64 KiB allocation per read; a buffer a pending write still holds is handed to that write
 * and replaced. For accepted sockets Node has no public `onread`, so this reaches its internal
 * symbols: it measures what a hot, allocation-free read path is worth, it is not a way to build one.
 * usage: node bench/peers/node-pipe.ts LISTEN_PORT UP_HOST UP_PORT [THREADS] [MODE]   (prints {"ready":true,"port":N})
 */
import net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { exitWithParent, intArg, report } from '../lib/child.ts';

type Mode = 'pipe' | 'fwd' | 'hot';

const kPeer = Symbol('peer');
type Peered = net.Socket & { [kPeer]: net.Socket };
function onData(this: Peered, chunk: Buffer): void {
  if (!this[kPeer].write(chunk)) this.pause();
}
function onDrain(this: Peered): void {
  this[kPeer].resume();
}
function onEnd(this: Peered): void {
  this[kPeer].end();
}
function onGone(this: Peered): void {
  this.destroy();
  this[kPeer].destroy();
}

let kBuffer: symbol | undefined;
let kBufferCb: symbol | undefined;
const HOT = Math.max(1, Number(process.env.HOT_BUF_KIB ?? 64)) * 1024;
type Hot = net.Socket & { [k: symbol]: unknown; _handle: { useUserBuffer(b: Buffer): void } | null };

/** src reads into a reused buffer and writes each read to dst at once. */
function hot(src: Hot, dst: net.Socket): void {
  if (!kBuffer) {
    const probe = new net.Socket({ onread: { buffer: Buffer.alloc(1), callback: () => true } });
    const syms = Object.getOwnPropertySymbols(probe);
    kBuffer = syms.find((x) => x.description === 'kBuffer');
    kBufferCb = syms.find((x) => x.description === 'kBufferCb');
    probe.destroy();
    if (!kBuffer || !kBufferCb) throw new Error('this Node has no onread user-buffer symbols');
  }
  const give = (): void => {
    const b = Buffer.allocUnsafe(HOT);
    src[kBuffer!] = b;
    src._handle?.useUserBuffer(b);
  };
  give();
  src[kBufferCb!] = (n: number, buf: Buffer): boolean => {
    const before = dst.writableLength;
    const ok = dst.write(buf.subarray(0, n));
    // Still queued: the pending write holds this buffer; read into a new one from now on.
    if (dst.writableLength > before || !ok) give();
    return ok;
  };
}

function serve(listenPort: number, upHost: string, upPort: number, reusePort: boolean, mode: Mode, ready: (port: number) => void): void {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = net.connect({ host: upHost, port: upPort, allowHalfOpen: true, noDelay: true });
    if (mode === 'hot') {
      (client as Peered)[kPeer] = upstream;
      (upstream as Peered)[kPeer] = client;
      hot(client as Hot, upstream);
      hot(upstream as Hot, client);
      for (const s of [client, upstream]) {
        s.on('drain', onDrain);
        s.on('end', onEnd);
        s.on('error', onGone);
        s.on('close', onGone);
        s.resume();
      }
      return;
    }
    if (mode === 'fwd') {
      (client as Peered)[kPeer] = upstream;
      (upstream as Peered)[kPeer] = client;
      for (const s of [client, upstream]) {
        s.on('data', onData);
        s.on('drain', onDrain);
        s.on('end', onEnd);
        s.on('error', onGone);
        s.on('close', onGone);
      }
      return;
    }
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen({ port: listenPort, host: '127.0.0.1', backlog: 4096, reusePort }, () => ready((server.address() as net.AddressInfo).port));
}

if (isMainThread) {
  const USAGE = 'node bench/peers/node-pipe.ts LISTEN_PORT UP_HOST UP_PORT [THREADS] [MODE]';
  const listenPort = intArg(process.argv[2], 'LISTEN_PORT', USAGE);
  const upHost = process.argv[3] ?? '127.0.0.1';
  const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
  const threads = intArg(process.argv[5] ?? '0', 'THREADS', USAGE);
  const mode = (process.argv[6] ?? 'pipe') as Mode;
  if (mode !== 'pipe' && mode !== 'fwd' && mode !== 'hot') {
    process.stderr.write(`bad MODE ${mode}\nusage: ${USAGE}\n`);
    process.exit(2);
  }
  exitWithParent();
  if (threads === 0) serve(listenPort, upHost, upPort, false, mode, (port) => report({ ready: true, port }));
  else {
    if (listenPort === 0) throw new Error('THREADS > 0 needs a fixed LISTEN_PORT (reusePort)');
    let ready = 0;
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL(import.meta.url), { workerData: { listenPort, upHost, upPort, mode } });
      w.on('message', () => {
        if (++ready === threads) report({ ready: true, port: listenPort, threads });
      });
      w.on('error', (err) => {
        process.stderr.write(`worker error: ${err.stack}\n`);
        process.exit(1);
      });
    }
  }
} else {
  const { listenPort, upHost, upPort, mode } = workerData as { listenPort: number; upHost: string; upPort: number; mode: Mode };
  serve(listenPort, upHost, upPort, true, mode, () => parentPort!.postMessage('ready'));
}
