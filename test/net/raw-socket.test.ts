/**
 * RawSocket: an accepted connection on the bare libuv handle (no net.Socket), as the http
 * listener's plain connections are. Each test drives it from a real `net` client on 127.0.0.1
 * and asserts what that client and the server observe: bytes both ways in order, backpressure
 * and 'drain' (corked or not), the FIN each way with half-open kept, RST, the inactivity timer,
 * and the server's connection count (`server.close()` completes). The leak check (test/setup)
 * runs after the file.
 */
import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { acceptThroughOnread, readsThroughOnread, type ReadCallback } from '../../src/net/adopt-socket.ts';
import { HIGH_WATER, RawSocket, rawSocketsAvailable } from '../../src/net/raw-socket.ts';
import { until } from '../helpers/daemon.ts';

interface Setup {
  server: net.Server;
  port: number;
  accepted: RawSocket[];
  read: Map<RawSocket, Buffer[]>;
  events: Map<RawSocket, string[]>;
  close(): Promise<void>;
}

async function serve(onRead?: (s: RawSocket, chunk: Buffer) => boolean): Promise<Setup> {
  const read = new Map<RawSocket, Buffer[]>();
  const events = new Map<RawSocket, string[]>();
  const cb: ReadCallback = function (n, buf) {
    const s = this as unknown as RawSocket;
    const chunk = Buffer.from(buf.subarray(0, n));
    read.get(s)!.push(chunk);
    return onRead ? onRead(s, chunk) : true;
  };
  const accepted: RawSocket[] = [];
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (sock) => {
    const s = sock as unknown as RawSocket;
    accepted.push(s);
    read.set(s, []);
    const ev: string[] = [];
    events.set(s, ev);
    for (const name of ['end', 'drain', 'timeout', 'finish']) s.on(name, () => ev.push(name));
    s.on('error', (e: NodeJS.ErrnoException) => ev.push(`error:${e.code}`));
    s.on('close', (hadError: boolean) => ev.push(hadError ? 'close:error' : 'close'));
    s.resume();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  expect(acceptThroughOnread(server, cb, () => true, true)).toBe(true);
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    accepted,
    read,
    events,
    async close() {
      for (const s of accepted) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

async function connect(port: number): Promise<net.Socket> {
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  await once(c, 'connect');
  return c;
}

/** A server (see {@link serve}) with one client connected and its RawSocket accepted. */
async function pair(): Promise<{ x: Setup; c: net.Socket; s: RawSocket }> {
  const x = await serve();
  const c = await connect(x.port);
  await until(() => x.accepted.length === 1, 5_000, 'accept');
  return { x, c, s: x.accepted[0]! };
}

/** The bytes `c` receives, as they arrive. */
function collect(c: net.Socket): Buffer[] {
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  return got;
}

function text(x: Setup, s: RawSocket): string {
  return Buffer.concat(x.read.get(s)!).toString('latin1');
}

describe.skipIf(!rawSocketsAvailable())('RawSocket', () => {
  test('an accepted connection is a RawSocket: bytes both ways in order, its addresses, the counts', async () => {
    const { x, c, s } = await pair();
    expect(s).toBeInstanceOf(RawSocket);
    expect(readsThroughOnread(s as unknown as net.Socket)).toBe(true);
    expect(s.remoteAddress).toBe('127.0.0.1');
    expect(s.remotePort).toBe(c.localPort);
    expect(s.localPort).toBe(x.port);
    for (let i = 0; i < 50; i++) c.write(`${i},`);
    const want = Array.from({ length: 50 }, (_, i) => `${i},`).join('');
    await until(() => text(x, s) === want, 5_000, 'the client bytes, in order');
    const got = collect(c);
    expect(s.write('latin1 \xe9', 'latin1')).toBe(true);
    expect(s.write(Buffer.from(' buffer'))).toBe(true);
    s.write(' utf8 é');
    await until(() => Buffer.concat(got).length === 23, 5_000, 'the server bytes');
    expect(Buffer.concat(got)).toEqual(Buffer.concat([Buffer.from('latin1 \xe9', 'latin1'), Buffer.from(' buffer utf8 é')]));
    expect(s.bytesRead).toBe(want.length);
    expect(s.bytesWritten).toBe(23);
    const count = await new Promise<number>((r) => x.server.getConnections((_e, n) => r(n)));
    expect(count).toBe(1);
    // The client closes: a FIN here ('end'); half-open, the socket closes after its own end().
    c.destroy();
    await until(() => x.events.get(s)!.includes('end'), 5_000, "'end'");
    s.end();
    await until(() => x.events.get(s)!.some((e) => e.startsWith('close')), 5_000, 'close after both FINs');
    expect(await new Promise<number>((r) => x.server.getConnections((_e, n) => r(n)))).toBe(0);
    await x.close();
  });

  test('a write past the mark returns false; "drain" comes once the client reads, corked writes included', async () => {
    const { x, c, s } = await pair();
    c.pause();
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let writes = 0;
    // The client does not read: the kernel buffers fill, then the queue passes the mark.
    while (s.write(chunk) && writes < 200) writes++;
    expect(writes).toBeLessThan(200);
    expect(s.writableLength).toBeGreaterThanOrEqual(HIGH_WATER);
    expect(s.writableNeedDrain).toBe(true);
    let received = 0;
    c.on('data', (d: Buffer) => (received += d.length));
    c.resume();
    await until(() => x.events.get(s)!.includes('drain'), 10_000, "'drain'");
    expect(s.writableLength).toBe(0);
    await until(() => received === (writes + 1) * chunk.length, 10_000, 'every byte');
    // Corked: the writes wait and leave together; a false during the cork is followed by a
    // 'drain' even when they then go out at once.
    const before = x.events.get(s)!.filter((e) => e === 'drain').length;
    s.cork();
    let ok = true;
    for (let i = 0; i < 3; i++) ok = s.write(Buffer.alloc(32 * 1024, 0x62)) && ok;
    expect(ok).toBe(false);
    expect(s.writableLength).toBe(96 * 1024);
    s.uncork();
    await until(() => x.events.get(s)!.filter((e) => e === 'drain').length === before + 1, 10_000, "'drain' after the uncork");
    await until(() => received === (writes + 1) * chunk.length + 96 * 1024, 10_000, 'the corked bytes');
    c.destroy();
    await x.close();
  });

  test("the client's FIN: 'end', the socket stays writable (half-open) and closes after its own end()", async () => {
    const { x, c, s } = await pair();
    c.end('last words');
    await until(() => x.events.get(s)!.includes('end'), 5_000, "'end'");
    expect(text(x, s)).toBe('last words');
    expect(s.readableEnded).toBe(true);
    expect(s.destroyed).toBe(false);
    const got = collect(c);
    const clientEnd = once(c, 'end');
    s.write('still ');
    s.end('answering');
    expect(s.writableEnded).toBe(true);
    expect(s.write('too late')).toBe(false);
    await clientEnd;
    expect(Buffer.concat(got).toString()).toBe('still answering');
    await until(() => x.events.get(s)!.includes('close'), 5_000, 'close once both sides are done');
    expect(x.events.get(s)).toEqual(['end', 'finish', 'close']);
    await x.close();
  });

  test("the server's FIN first: the client reads to its end; the socket closes when the client's FIN arrives", async () => {
    const { x, c, s } = await pair();
    const got = collect(c);
    const clientEnd = once(c, 'end');
    s.end(Buffer.from('bye'));
    await clientEnd;
    expect(Buffer.concat(got).toString()).toBe('bye');
    await until(() => x.events.get(s)!.includes('finish'), 5_000, "'finish'");
    expect(s.destroyed).toBe(false);
    c.write('after your FIN');
    c.end();
    await until(() => x.events.get(s)!.includes('close'), 5_000, 'close');
    expect(text(x, s)).toBe('after your FIN');
    expect(x.events.get(s)).toEqual(['finish', 'end', 'close']);
    await x.close();
  });

  test('destroySoon() closes after the queued bytes are out, without waiting for the client', async () => {
    // 100 kB: all in the kernel at once, closed at once. 16 MiB to a paused client: queued here,
    // closed after the FIN went out. Either way the client reads every byte, then a clean end.
    for (const size of [100_000, 16 * 1024 * 1024]) {
      const { x, c, s } = await pair();
      if (size > 100_000) c.pause();
      const got = collect(c);
      s.write(Buffer.alloc(size, 'a'));
      const queued = s.writableLength > 0;
      expect(queued).toBe(size > 100_000);
      s.destroySoon();
      if (queued) {
        expect(x.events.get(s)).not.toContain('close');
        c.resume();
      }
      await until(() => x.events.get(s)!.includes('close'), 5_000, 'close');
      await once(c, 'end');
      expect(Buffer.concat(got).length).toBe(size);
      c.destroy();
      await x.close();
    }
  });

  test('destroySoon() while corked: the corked bytes go out, then the socket closes', async () => {
    const { x, c, s } = await pair();
    const got = collect(c);
    s.cork();
    s.write('head ');
    s.write('body');
    s.destroySoon();
    expect(x.events.get(s)).not.toContain('close');
    s.uncork();
    await until(() => x.events.get(s)!.includes('close'), 5_000, 'close');
    await once(c, 'end');
    expect(Buffer.concat(got).toString()).toBe('head body');
    c.destroy();
    await x.close();
  });

  test('resetAndDestroy() resets the connection: the client sees ECONNRESET', async () => {
    const { x, c, s } = await pair();
    const err = new Promise<NodeJS.ErrnoException>((resolve) => c.once('error', resolve));
    s.resetAndDestroy();
    expect((await err).code).toBe('ECONNRESET');
    await until(() => x.events.get(s)!.includes('close'), 5_000, 'close');
    await x.close();
  });

  test('a read callback returning false pauses reading until resume()', async () => {
    let paused = false;
    const x = await serve((_s, chunk) => {
      if (chunk.includes('stop')) paused = true;
      return !paused;
    });
    const c = await connect(x.port);
    await until(() => x.accepted.length === 1, 5_000, 'accept');
    const s = x.accepted[0]!;
    c.write('stop');
    await until(() => text(x, s) === 'stop', 5_000, 'the first bytes');
    c.write('more');
    // Nothing is read while paused: the bytes wait in the kernel. An echo round trip on a
    // second connection shows the loop went on meanwhile.
    const c2 = await connect(x.port);
    await until(() => x.accepted.length === 2, 5_000, 'second accept');
    c2.write('ping');
    await until(() => text(x, x.accepted[1]!) === 'ping', 5_000, 'second connection read');
    expect(text(x, s)).toBe('stop');
    paused = false;
    s.resume();
    await until(() => text(x, s) === 'stopmore', 5_000, 'the bytes after resume()');
    c.destroy();
    c2.destroy();
    await x.close();
  });

  test("setTimeout: 'timeout' after the quiet time, postponed by activity, off with 0", async () => {
    const { x, c, s } = await pair();
    const c2 = await connect(x.port);
    await until(() => x.accepted.length === 2, 5_000, 'second accept');
    const s2 = x.accepted[1]!;
    const t0 = performance.now();
    s.setTimeout(150);
    // The other socket's 100 ms timer is the clock: activity then pushes the deadline to ~250 ms.
    s2.setTimeout(100);
    await once(s2, 'timeout');
    c.write('x');
    await until(() => text(x, s) === 'x', 2_000, 'the byte');
    const active = performance.now();
    await once(s, 'timeout');
    expect(performance.now() - active).toBeGreaterThanOrEqual(140);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(240);
    expect(s.destroyed).toBe(false); // a timeout only tells; the owner decides
    s.setTimeout(50);
    s.setTimeout(0);
    s2.setTimeout(60);
    await once(s2, 'timeout');
    expect(x.events.get(s)!.filter((e) => e === 'timeout').length).toBe(1);
    c.destroy();
    c2.destroy();
    await x.close();
  });

  test('server.close() completes once every RawSocket is closed', async () => {
    const x = await serve();
    const clients = await Promise.all([connect(x.port), connect(x.port), connect(x.port)]);
    await until(() => x.accepted.length === 3, 5_000, 'accepts');
    let closed = false;
    x.server.close(() => (closed = true));
    x.accepted[0]!.destroy();
    x.accepted[1]!.end();
    clients[1]!.end();
    await until(() => x.events.get(x.accepted[1]!)!.includes('close'), 5_000, 'second closed');
    expect(closed).toBe(false);
    x.accepted[2]!.resetAndDestroy();
    await until(() => closed, 5_000, 'server closed');
    for (const c of clients) c.destroy();
  });

  describe('outgoing (RawSocket.connect)', () => {
    async function peerServer(): Promise<{ server: net.Server; port: number; peers: net.Socket[]; got: Map<net.Socket, string> }> {
      const peers: net.Socket[] = [];
      const got = new Map<net.Socket, string>();
      const server = net.createServer({ allowHalfOpen: true }, (p) => {
        peers.push(p);
        got.set(p, '');
        p.on('data', (d: Buffer) => got.set(p, got.get(p)! + d.toString()));
        p.on('error', () => {});
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return { server, port: (server.address() as net.AddressInfo).port, peers, got };
    }

    test("writes made while connecting leave once connected; 'connect', readyState, bytes both ways", async () => {
      const x = await peerServer();
      const read: string[] = [];
      const s = RawSocket.connect('127.0.0.1', x.port, 4, (n, buf) => (read.push(buf.toString('latin1', 0, n)), true))!;
      expect(s).toBeInstanceOf(RawSocket);
      expect(s.readyState).toBe('opening');
      s.write('early ');
      s.write('bytes');
      await once(s, 'connect');
      expect(s.readyState).toBe('open');
      await until(() => x.peers.length === 1 && x.got.get(x.peers[0]!) === 'early bytes', 5_000, 'the early bytes at the peer');
      x.peers[0]!.write('answer');
      await until(() => read.join('') === 'answer', 5_000, 'the answer read');
      expect(s.remotePort).toBe(x.port);
      s.destroy();
      await once(s, 'close');
      expect(s.readyState).toBe('closed');
      x.peers[0]!.destroy();
      x.server.close();
      await once(x.server, 'close');
    });

    test("not half-open: our FIN first, then the peer's, and it closes; the peer's FIN first, ours follows", async () => {
      const x = await peerServer();
      const a = RawSocket.connect('127.0.0.1', x.port, 4, () => true)!;
      await once(a, 'connect');
      await until(() => x.peers.length === 1, 5_000, 'accept');
      const pa = x.peers[0]!;
      const peerEnd = once(pa, 'end');
      a.end('bye');
      await peerEnd;
      expect(a.readyState).toBe('readOnly');
      const closed = once(a, 'close');
      pa.end();
      await closed;
      // The peer ends first: this side's FIN goes out at once (allowHalfOpen false), then closes.
      const b = RawSocket.connect('127.0.0.1', x.port, 4, () => true)!;
      await once(b, 'connect');
      await until(() => x.peers.length === 2, 5_000, 'accept');
      const pb = x.peers[1]!;
      const pbEnd = once(pb, 'end');
      const bClosed = once(b, 'close');
      pb.end();
      await pbEnd;
      await bClosed;
      x.server.close();
      await once(x.server, 'close');
    });

    test("a refused connect: 'error' (ECONNREFUSED), then 'close'", async () => {
      const x = await peerServer();
      const port = x.port;
      x.server.close();
      await once(x.server, 'close');
      const s = RawSocket.connect('127.0.0.1', port, 4, () => true)!;
      const events: string[] = [];
      s.on('connect', () => events.push('connect'));
      const err = new Promise<NodeJS.ErrnoException>((r) => s.once('error', r));
      s.on('close', () => events.push('close'));
      expect((await err).code).toBe('ECONNREFUSED');
      await until(() => events.includes('close'), 5_000, 'close');
      expect(events).toEqual(['close']);
      expect(s.readyState).toBe('closed');
    });

    test("destroyed while connecting: no 'connect', the queued bytes never leave, 'close'", async () => {
      const x = await peerServer();
      const s = RawSocket.connect('127.0.0.1', x.port, 4, () => true)!;
      const events: string[] = [];
      s.on('connect', () => events.push('connect'));
      s.on('close', () => events.push('close'));
      s.write('never sent');
      s.destroy();
      expect(s.readyState).toBe('closed');
      await until(() => events.includes('close'), 5_000, 'close');
      expect(events).toEqual(['close']);
      // The kernel may have completed the handshake: whatever was accepted got no byte.
      for (const p of x.peers) expect(x.got.get(p)).toBe('');
      for (const p of x.peers) p.destroy();
      x.server.close();
      await once(x.server, 'close');
    });
  });
});
