/**
 * Streaming through an HTTP listener with backpressure both ways, on the real daemon: a large
 * upload to a backend that reads slowly, and a large download to a client that reads slowly.
 * Every byte arrives intact (counted, CRC-32 over the stream), the sender is never more than a
 * few socket buffers ahead of the slow reader, and the daemon's RSS stays bounded: the gateway
 * holds the fast side back instead of buffering.
 *
 * Size: 256 MiB each way by default, to keep the suite's time budget; GATEHOUSE_TEST_1GB=1
 * streams 1 GiB each way (a few seconds more per transfer).
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';

const MiB = 1024 * 1024;
const TOTAL = process.env.GATEHOUSE_TEST_1GB === '1' ? 1024 * MiB : 256 * MiB;
/** What a writer hands its socket at once. */
const CHUNK = 64 * 1024;
/** The slow reader stops reading for PAUSE_MS after each STRIDE bytes: long enough for every socket buffer on the way to fill. */
const STRIDE = 8 * MiB;
const PAUSE_MS = 25;
/**
 * Bytes the sender may be ahead of the slow reader: what the socket buffers on the way hold (two
 * receive buffers, which loopback autotuning grows up to half of tcp_rmem's 32 MiB maximum on a
 * stock kernel, and two send buffers), never the bulk of the stream. A gateway that kept reading
 * the fast side would be ahead by most of the stream (the slow side moves at about a third of the
 * fast side's pace here).
 */
const MAX_AHEAD = 64 * MiB;
/**
 * The daemon's RSS growth while streaming. About 70 MiB whatever the size (256 MiB or 1 GiB): the
 * HTTP connection reads the client socket into a fresh 64 KiB buffer per read (the L4 path reads
 * into reused buffers, and its test allows 48 MiB), which V8 frees at its external-memory GC
 * trigger. A gateway that buffered would grow with the stream.
 */
const MAX_RSS_GROWTH = 96 * MiB;

/** The stream's content: a random pattern whose length is no multiple of CHUNK, so a lost, doubled or swapped chunk changes the CRC. */
const PATTERN = randomBytes(MiB + 7);
const PATTERN2 = Buffer.concat([PATTERN, PATTERN]);
/** `n` bytes of the stream from offset `at` (no copy). */
const slice = (at: number, n: number): Buffer => {
  const o = at % PATTERN.length;
  return PATTERN2.subarray(o, o + n);
};

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** What one transfer observed. */
interface Flow {
  /** Bytes handed to the sending socket / read by the receiver. */
  sent: number;
  received: number;
  sentCrc: number;
  receivedCrc: number;
  maxAhead: number;
  peakRss: number;
}
const flow = (): Flow => ({ sent: 0, received: 0, sentCrc: 0, receivedCrc: 0, maxAhead: 0, peakRss: 0 });

/** Counts `chunk` as read by the slow reader; every `stride` bytes samples the daemon's RSS and pauses `pausable` for PAUSE_MS. */
function slowRead(f: Flow, chunk: Buffer, pid: number, pausable: { pause(): unknown; resume(): unknown }, since: { n: number }, stride = STRIDE): void {
  f.received += chunk.length;
  f.receivedCrc = crc32(chunk, f.receivedCrc);
  f.maxAhead = Math.max(f.maxAhead, f.sent - f.received);
  since.n += chunk.length;
  if (since.n >= stride) {
    since.n = 0;
    f.peakRss = Math.max(f.peakRss, rssBytes(pid));
    pausable.pause();
    setTimeout(() => pausable.resume(), PAUSE_MS);
  }
}

/** Writes `total` bytes of the stream to `w`, waiting for 'drain' whenever it is full. */
async function writeStream(w: net.Socket | http.ServerResponse, f: Flow, total: number): Promise<void> {
  while (f.sent < total) {
    const b = slice(f.sent, Math.min(CHUNK, total - f.sent));
    f.sentCrc = crc32(b, f.sentCrc);
    f.sent += b.length;
    if (!w.write(b)) await once(w, 'drain');
  }
}

/** Reads a response head from a raw socket: resolves with its text and the body bytes that came with it. */
function readHead(s: net.Socket): Promise<{ head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      s.off('data', onData);
      s.off('close', onClose);
      s.pause();
      resolve({ head: buf.subarray(0, i).toString('latin1'), rest: buf.subarray(i + 4) });
    };
    const onClose = (): void => reject(new Error(`connection closed before a response head (${buf.length} bytes: ${buf.toString('latin1').slice(0, 200)})`));
    s.on('data', onData);
    s.on('close', onClose);
  });
}

/** Decodes a chunked body as it arrives (strict: CRLF line ends, hex sizes), calling `onData` with its bytes. */
class ChunkedDecoder {
  done = false;
  #state: 'size' | 'data' | 'crlf' | 'trailers' = 'size';
  #line = '';
  #left = 0;
  readonly #onData: (b: Buffer) => void;
  constructor(onData: (b: Buffer) => void) {
    this.#onData = onData;
  }
  feed(b: Buffer): void {
    let i = 0;
    while (i < b.length && !this.done) {
      if (this.#state === 'data') {
        const n = Math.min(this.#left, b.length - i);
        this.#onData(b.subarray(i, i + n));
        i += n;
        this.#left -= n;
        if (this.#left === 0) this.#state = 'crlf';
        continue;
      }
      const lf = b.indexOf(10, i);
      if (lf < 0) {
        this.#line += b.toString('latin1', i);
        return;
      }
      const line = this.#line + b.toString('latin1', i, lf);
      this.#line = '';
      i = lf + 1;
      if (!line.endsWith('\r')) throw new Error(`chunked body: bare LF after ${JSON.stringify(line)}`);
      const text = line.slice(0, -1);
      if (this.#state === 'size') {
        if (!/^[0-9a-f]+(;.*)?$/i.test(text)) throw new Error(`chunked body: bad size line ${JSON.stringify(text)}`);
        this.#left = parseInt(text, 16);
        this.#state = this.#left === 0 ? 'trailers' : 'data';
      } else if (this.#state === 'crlf') {
        if (text !== '') throw new Error(`chunked body: chunk data not followed by CRLF (${JSON.stringify(text.slice(0, 40))})`);
        this.#state = 'size';
      } else if (text === '') this.done = true;
    }
  }
}

async function connectRaw(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1' });
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

describe(`HTTP streaming with backpressure, ${TOTAL / MiB} MiB each way`, () => {
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let backend: http.Server;
  /** The transfer the backend takes part in now. */
  let current: Flow = flow();
  let pid = 0;

  beforeAll(async () => {
    backend = http.createServer((req, res) => {
      const f = current;
      if (req.method === 'PUT' && req.url === '/up') {
        // The slow reader of the upload.
        const since = { n: 0 };
        req.on('data', (d: Buffer) => slowRead(f, d, pid, req, since));
        req.on('end', () => res.end(JSON.stringify({ bytes: f.received, crc: f.receivedCrc })));
        return;
      }
      if (req.method === 'POST' && req.url === '/echo') {
        // Echoed as it arrives, chunked (no Content-Length): the head goes out with the first bytes.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        req.pipe(res);
        return;
      }
      if (req.method === 'GET' && req.url === '/down') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) });
        writeStream(res, f, TOTAL).then(() => res.end(), () => res.destroy());
        return;
      }
      res.writeHead(404).end();
    });
    backend.keepAliveTimeout = 10_000;
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    const port = (backend.address() as net.AddressInfo).port;
    dir = tempDir();
    gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams:
  - { name: store, backends: [ "127.0.0.1:${port}" ], healthCheck: { enabled: false } }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes: [ { name: files, upstream: store, timeout: 30s, idleTimeout: 30s } ]
`,
      ),
    );
    pid = gh.child.pid!;
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    backend?.closeAllConnections();
    backend?.close();
    if (backend) await once(backend, 'close');
    dir?.[Symbol.dispose]();
  });

  /** The daemon is idle again: no connection counted, no http-connection actor. */
  async function expectIdle(): Promise<void> {
    expect(await gh.idleLeftovers()).toEqual([]);
    const text = await (await gh.admin('/metrics')).text();
    expect(metric(text, 'gatehouse_actors', { type: 'http-connection' }) ?? 0).toBe(0);
    expect(metric(text, 'gatehouse_connections_active', { listener: 'web' })).toBe(0);
  }

  test('an upload to a backend that reads slowly: the client is held back, every byte arrives in order, RSS stays bounded', async () => {
    const f = (current = flow());
    const c = await connectRaw(gh.port('web'));
    const base = rssBytes(pid);
    f.peakRss = base;
    c.write(`PUT /up HTTP/1.1\r\nHost: files.test\r\nContent-Type: application/octet-stream\r\nContent-Length: ${TOTAL}\r\n\r\n`);
    const answer = readHead(c);
    await writeStream(c, f, TOTAL);
    const { head, rest } = await answer;
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
    let body = rest;
    c.resume();
    while (body.length < len) body = Buffer.concat([body, ((await once(c, 'data')) as [Buffer])[0]]);
    c.destroy();
    // The backend got every byte, in order: its count and CRC are the client's.
    expect(JSON.parse(body.toString())).toEqual({ bytes: TOTAL, crc: f.sentCrc });
    expect(f.received).toBe(TOTAL);
    // The gateway stopped reading the client while the backend did not read: the client was
    // never further ahead than the socket buffers on the way.
    expect(f.maxAhead).toBeLessThan(MAX_AHEAD);
    expect(f.peakRss - base).toBeLessThan(MAX_RSS_GROWTH);
    await expectIdle();
  }, 120_000);

  test('a download to a client that reads slowly: the backend is held back, every byte arrives in order, RSS stays bounded', async () => {
    const f = (current = flow());
    const c = await connectRaw(gh.port('web'));
    const base = rssBytes(pid);
    f.peakRss = base;
    c.write('GET /down HTTP/1.1\r\nHost: files.test\r\n\r\n');
    const { head, rest } = await readHead(c);
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    expect(head).toMatch(new RegExp(`\r\ncontent-length: ${TOTAL}(\r\n|$)`, 'i'));
    const since = { n: 0 };
    const done = new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        slowRead(f, d, pid, c, since);
        if (f.received >= TOTAL) {
          c.off('data', onData);
          resolve();
        }
      };
      c.on('data', onData);
      c.once('close', () => reject(new Error(`connection closed after ${f.received} of ${TOTAL} bytes`)));
      if (rest.length > 0) onData(rest);
    });
    c.resume();
    await done;
    c.destroy();
    expect(f.received).toBe(TOTAL);
    expect(f.sent).toBe(TOTAL);
    expect(f.receivedCrc).toBe(f.sentCrc);
    // The backend was held back while the client did not read.
    expect(f.maxAhead).toBeLessThan(MAX_AHEAD);
    expect(f.peakRss - base).toBeLessThan(MAX_RSS_GROWTH);
    await expectIdle();
  }, 120_000);

  test('full duplex, chunked both ways: a chunked upload echoed back chunked while it streams, to a client that reads slowly', async () => {
    const total = TOTAL / 2;
    const f = flow();
    const c = await connectRaw(gh.port('web'));
    const base = rssBytes(pid);
    f.peakRss = base;
    c.write('POST /echo HTTP/1.1\r\nHost: files.test\r\nTransfer-Encoding: chunked\r\n\r\n');
    // The client writes chunks of varying sizes while it reads the echo (slowly) at the same time.
    const writing = (async () => {
      let n = 0;
      while (f.sent < total) {
        const b = slice(f.sent, Math.min(1 + ((n++ * 7919) % CHUNK), total - f.sent));
        f.sentCrc = crc32(b, f.sentCrc);
        f.sent += b.length;
        c.write(`${b.length.toString(16)}\r\n`);
        c.write(b);
        if (!c.write('\r\n')) await once(c, 'drain');
      }
      c.write('0\r\n\r\n');
    })();
    const { head, rest } = await readHead(c);
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    expect(head).toMatch(/\r\ntransfer-encoding: chunked(\r\n|$)/i);
    const since = { n: 0 };
    // Slower than the other readers (the client also writes and decodes): the writer must be able to outrun it.
    const decoder = new ChunkedDecoder((d) => slowRead(f, Buffer.from(d), pid, c, since, STRIDE / 4));
    const done = new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        try {
          decoder.feed(d);
        } catch (err) {
          reject(err as Error);
          return;
        }
        if (decoder.done) {
          c.off('data', onData);
          resolve();
        }
      };
      c.on('data', onData);
      c.once('close', () => reject(new Error(`connection closed after ${f.received} of ${total} bytes`)));
      if (rest.length > 0) onData(rest);
    });
    c.resume();
    await Promise.all([writing, done]);
    c.destroy();
    expect(f.received).toBe(total);
    expect(f.receivedCrc).toBe(f.sentCrc);
    expect(f.maxAhead).toBeLessThan(MAX_AHEAD);
    expect(f.peakRss - base).toBeLessThan(MAX_RSS_GROWTH);
    await expectIdle();
  }, 120_000);
});
