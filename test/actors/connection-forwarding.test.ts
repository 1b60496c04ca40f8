import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { ListenerActor } from '../../src/actors/listener.ts';
import { Balancer } from '../../src/workers/balancer.ts';
import { B, LB, L, StateTable } from '../../src/workers/state-table.ts';
import type { ShardListener, ShardUpstream } from '../../src/workers/shard-config.ts';
import { roundTrip, startEchoServer } from '../helpers/net.ts';

const log = pino({ level: 'silent' });

function upstreamOf(ports: number[], connectTimeoutMs = 1_000, connectRetries = 2): ShardUpstream {
  return {
    name: 'app',
    balance: 'round_robin',
    connectTimeoutMs,
    connectRetries,
    failureThreshold: 0,
    backends: ports.map((port, i) => ({ address: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, slot: i })),
  };
}

const listenerConfig: ShardListener = { name: 't', protocol: 'tcp', host: '127.0.0.1', port: 0, upstream: 'app', maxConnections: 100, maxConnectionsPerIp: 0, idleTimeoutMs: 0, slot: 0 };

async function startListener(upstream: ShardUpstream, table = StateTable.create()) {
  const l = await new ListenerActor({ shard: 0, listener: listenerConfig, upstream, balancer: new Balancer(upstream, table), table, log, connectionActor: 'light', reusePort: false }).start();
  return { l, table, port: l.address!.port, [Symbol.asyncDispose]: async () => void (await l.shutdown('brutal')) };
}

/**
 * A deterministic byte stream of `total` bytes: 1 MiB + 7 of random bytes, rotated by a different
 * offset for every chunk and stamped with the chunk's number, so a lost, repeated, reordered or
 * overwritten chunk changes the hash.
 */
function pattern(total: number): { chunks: () => Generator<Buffer>; sha256: string } {
  const base = randomBytes((1 << 20) + 7);
  function* chunks(): Generator<Buffer> {
    let k = 0;
    for (let sent = 0; sent < total; k++) {
      const o = (k * 4099) % base.length;
      const c = Buffer.concat([base.subarray(o), base.subarray(0, o)]).subarray(0, Math.min(base.length, total - sent));
      if (c.length >= 4) c.writeUInt32BE(k, 0);
      sent += c.length;
      yield c;
    }
  }
  const h = createHash('sha256');
  for (const c of chunks()) h.update(c);
  return { chunks, sha256: h.digest('hex') };
}

/** Writes every chunk with backpressure, then half-closes. */
async function send(s: net.Socket, chunks: Iterable<Buffer>): Promise<void> {
  for (const c of chunks) if (!s.write(c)) await once(s, 'drain');
  s.end();
}

/** Hashes everything read until EOF; `slow` reads in bursts, pausing the socket between them. */
function receive(s: net.Socket, slow: boolean): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  let sincePause = 0;
  s.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
    sincePause += d.length;
    // A slow reader: every 256 KiB it stops reading for a few ms, so the gateway's writes to it
    // queue up and the other side is paused by backpressure.
    if (slow && sincePause >= 256 * 1024) {
      sincePause = 0;
      s.pause();
      setTimeout(() => s.resume(), 3);
    }
  });
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve({ bytes, sha256: h.digest('hex') }));
    s.once('error', reject);
  });
}

describe('forwarding', () => {
  test.each(['client', 'backend'] as const)('50 MB each way arrive intact, with a slow reader at the %s', async (slowSide) => {
    const total = 50 * 1000 * 1000;
    const up = pattern(total);
    const down = pattern(total);
    let atBackend: Promise<{ bytes: number; sha256: string }> | undefined;
    const backendSockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      backendSockets.add(s);
      s.on('close', () => backendSockets.delete(s));
      atBackend = receive(s, slowSide === 'backend');
      void send(s, down.chunks()).catch(() => {});
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      await using gw = await startListener(upstreamOf([(server.address() as net.AddressInfo).port]));
      const c = net.connect({ port: gw.port, host: '127.0.0.1', allowHalfOpen: true });
      await once(c, 'connect');
      const atClient = receive(c, slowSide === 'client');
      await send(c, up.chunks());
      const [got, sent] = await Promise.all([atClient, expect.poll(() => atBackend).toBeDefined().then(() => atBackend!)]);
      expect(sent).toEqual({ bytes: total, sha256: up.sha256 });
      expect(got).toEqual({ bytes: total, sha256: down.sha256 });
      c.destroy();
      await expect.poll(() => gw.l.connections.size).toBe(0);
      // bytes_total: counted by the client socket, both ways.
      expect(gw.table.bytesGet(0, 0, LB.BYTES_IN)).toBe(total);
      expect(gw.table.bytesGet(0, 0, LB.BYTES_OUT)).toBe(total);
      expect(gw.table.listenerGet(0, 0, L.OK)).toBe(1);
    } finally {
      for (const s of backendSockets) s.destroy();
      server.close();
      await once(server, 'close');
    }
  }, 60_000);
});

/**
 * A listening socket that never accepts (a child process that only calls listen()), its backlog
 * filled: new connects to it hang, as to a blackholed host, without leaving 127.0.0.1.
 */
async function startBlackhole(): Promise<{ port: number; [Symbol.asyncDispose](): Promise<void> }> {
  const child = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(String(line).trim());
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const f = net.connect(port, '127.0.0.1');
    f.on('error', () => {});
    fillers.push(f);
  }
  return {
    port,
    [Symbol.asyncDispose]: async () => {
      for (const f of fillers) f.destroy();
      const exited = once(child, 'exit');
      child.stdin!.end();
      await exited;
    },
  };
}

describe('retry across a reload', () => {
  test('a backend tried before the reload is not tried again under its new object', async () => {
    await using hole = await startBlackhole();
    await using echo = await startEchoServer();
    // One retry: the blackhole first (round robin), then the next backend.
    const before = upstreamOf([hole.port, echo.port], 300, 1);
    await using gw = await startListener(before);
    const reply = roundTrip(gw.port, 'through');
    // While the connect to the blackhole is pending, a reload gives the same backends as new objects.
    await expect.poll(() => gw.table.backendGet(0, B.ACTIVE)).toBe(1);
    const after = upstreamOf([hole.port, echo.port], 300, 1);
    gw.l.reconfigure(listenerConfig, after, new Balancer(after, gw.table));
    // The retry skips the blackhole by its address: the client is served by echo.
    expect(await reply).toBe('through');
    expect(gw.table.listenerGet(0, 0, L.OK)).toBe(1);
  });
});
