import net from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { ListenerActor } from '../../src/actors/listener.ts';
import { Balancer } from '../../src/workers/balancer.ts';
import { StateTable, L, ipKey } from '../../src/workers/state-table.ts';
import type { ShardListener, ShardUpstream } from '../../src/workers/shard-config.ts';
import { startEchoServer } from '../helpers/net.ts';

/** Log lines the listener wrote, parsed. */
function capture(): { log: pino.Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

async function startListener(backendPort: number, limits: Partial<ShardListener>, log = pino({ level: 'silent' })) {
  const table = StateTable.create();
  const upstream: ShardUpstream = {
    name: 'app',
    balance: 'round_robin',
    connectTimeoutMs: 1_000,
    connectRetries: 0,
    failureThreshold: 0,
    backends: [{ address: `127.0.0.1:${backendPort}`, host: '127.0.0.1', port: backendPort, weight: 1, slot: 0 }],
  };
  const listener: ShardListener = { name: 't', protocol: 'tcp', host: '127.0.0.1', port: 0, upstream: 'app', maxConnections: 100, maxConnectionsPerIp: 0, idleTimeoutMs: 0, slot: 0, ...limits };
  const l = await new ListenerActor({ shard: 0, listener, upstream, balancer: new Balancer(upstream, table), table, log, connectionActor: 'light', reusePort: false }).start();
  const reconfigure = (more: Partial<ShardListener>) => l.reconfigure({ ...listener, ...more }, upstream, new Balancer(upstream, table));
  return { l, table, port: l.address!.port, reconfigure, [Symbol.asyncDispose]: async () => void (await l.shutdown('brutal')) };
}

interface Probe {
  /** 'open': the echo came back through the gateway; 'closed': the gateway closed it at once. */
  result: 'open' | 'closed';
  socket: net.Socket;
  close(): Promise<void>;
}

/** Connects (from `localAddress`), sends a byte and tells whether the connection was admitted. */
function probe(port: number, localAddress = '127.0.0.1'): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const close = async (): Promise<void> => {
      if (socket.closed) return;
      socket.destroy();
      await new Promise((r) => socket.once('close', r));
    };
    socket.on('error', () => {});
    socket.once('connect', () => socket.write('x'));
    socket.once('data', () => resolve({ result: 'open', socket, close }));
    socket.once('close', () => resolve({ result: 'closed', socket, close }));
  });
}

const count = (ps: Probe[], r: Probe['result']) => ps.filter((p) => p.result === r).length;

describe('rateLimit on a listener', () => {
  test('admits the burst, closes the rest at once and counts them rate_limited; one warning for the flood', async () => {
    await using echo = await startEchoServer();
    const { log, lines } = capture();
    await using gw = await startListener(echo.port, { rateLimit: { perSecond: 0.001, burst: 3 } }, log);
    const probes = await Promise.all(Array.from({ length: 10 }, () => probe(gw.port)));
    expect(count(probes, 'open')).toBe(3);
    expect(count(probes, 'closed')).toBe(7);
    expect(gw.table.listenerGet(0, 0, L.RATE_LIMITED)).toBe(7);
    expect(gw.table.listenerGet(0, 0, L.OVER_LIMIT)).toBe(0);
    // Every refusal is logged (debug), each with the client's address; one warning for the flood.
    const refusals = lines.filter((l) => l.msg === 'rate limit: new connections rejected');
    expect(refusals).toHaveLength(7);
    for (const l of refusals) expect(l).toMatchObject({ kind: 'rate_limited', remoteAddress: '127.0.0.1', listener: 't' });
    const warns = lines.filter((l) => l.level === 40);
    expect(warns).toEqual([expect.objectContaining({ msg: 'rate limit: new connections rejected', refused: 1, perSecond: 0.001, burst: 3, remoteAddress: '127.0.0.1' })]);
    await Promise.all(probes.map((p) => p.close()));
    await expect.poll(() => gw.l.connections.size).toBe(0);
    // Open connections ending give nothing back: it limits the rate of new ones, not how many are open.
    expect((await probe(gw.port)).result).toBe('closed');
  });

  test('a reload applies the new limit to the same bucket, and removing it admits all', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener(echo.port, { rateLimit: { perSecond: 0.001, burst: 2 } });
    const first = await Promise.all(Array.from({ length: 4 }, () => probe(gw.port)));
    expect(count(first, 'open')).toBe(2);
    // burst 4: two more fit in the bucket the first two used.
    gw.reconfigure({ rateLimit: { perSecond: 0.001, burst: 4 } });
    const second = await Promise.all(Array.from({ length: 4 }, () => probe(gw.port)));
    expect(count(second, 'open')).toBe(2);
    gw.reconfigure({ rateLimit: undefined });
    const third = await Promise.all(Array.from({ length: 4 }, () => probe(gw.port)));
    expect(count(third, 'open')).toBe(4);
    expect(gw.table.listenerGet(0, 0, L.RATE_LIMITED)).toBe(4);
    await Promise.all([...first, ...second, ...third].map((p) => p.close()));
  });
});

describe('maxConnectionsPerIp on a listener', () => {
  test('closes the excess of one IP at once, counts it over_limit, logs its address, and frees places as connections end', async () => {
    await using echo = await startEchoServer();
    const { log, lines } = capture();
    await using gw = await startListener(echo.port, { maxConnectionsPerIp: 2 }, log);
    const key = ipKey('127.0.0.1');
    const a = await probe(gw.port);
    const b = await probe(gw.port);
    expect([a.result, b.result]).toEqual(['open', 'open']);
    expect((await probe(gw.port)).result).toBe('closed');
    expect(gw.table.listenerGet(0, 0, L.OVER_LIMIT)).toBe(1);
    expect(lines.filter((l) => l.msg === 'maxConnectionsPerIp reached: connection refused')).toEqual([
      expect.objectContaining({ level: 40, kind: 'per_ip', remoteAddress: '127.0.0.1', maxConnectionsPerIp: 2, refused: 1, actorId: 'listener:t' }),
    ]);
    expect(gw.table.ipCount(0, key)).toBe(2);
    // The refused connection gave its listener-wide place back.
    expect(gw.table.listenerActiveAll(0)).toBe(2);
    // Another client IP has places of its own.
    const other = await probe(gw.port, '127.0.0.2');
    expect(other.result).toBe('open');
    expect(gw.table.ipCount(0, ipKey('127.0.0.2'))).toBe(1);

    await a.close();
    await expect.poll(() => gw.table.ipCount(0, key)).toBe(1);
    const c = await probe(gw.port);
    expect(c.result).toBe('open');
    // A reload applies to new connections.
    gw.reconfigure({ maxConnectionsPerIp: 3 });
    const d = await probe(gw.port);
    expect(d.result).toBe('open');
    expect((await probe(gw.port)).result).toBe('closed');
    expect(gw.table.listenerGet(0, 0, L.OVER_LIMIT)).toBe(2);

    await Promise.all([b, c, d, other].map((p) => p.close()));
    await expect.poll(() => gw.table.ipEntries(0)).toBe(0);
    expect(gw.table.listenerActiveAll(0)).toBe(0);
  });

  test('a connection that fails gives its place back, and so does one killed with its listener', async () => {
    const echo = await startEchoServer();
    const gw = await startListener(echo.port, { maxConnectionsPerIp: 1 });
    const held = await probe(gw.port);
    expect(held.result).toBe('open');
    await held.close();
    await expect.poll(() => gw.table.ipEntries(0)).toBe(0);
    const open = await probe(gw.port);
    expect(open.result).toBe('open');
    expect(gw.table.ipEntries(0)).toBe(1);
    // Killed (a shard stopping at its deadline): the place is given back once, in #finish.
    await gw.l.shutdown('brutal');
    expect(gw.table.ipEntries(0)).toBe(0);
    expect(gw.table.ipCount(0, ipKey('127.0.0.1'))).toBe(0);
    await open.close();
    // The backend refuses: the connection ends with backend_error and its place is free again.
    await echo[Symbol.asyncDispose]();
    await using gw2 = await startListener(echo.port, { maxConnectionsPerIp: 1 });
    expect((await probe(gw2.port)).result).toBe('closed');
    expect((await probe(gw2.port)).result).toBe('closed');
    await expect.poll(() => gw2.table.listenerGet(0, 0, L.BACKEND_ERROR)).toBe(2);
    expect(gw2.table.listenerGet(0, 0, L.OVER_LIMIT)).toBe(0);
    expect(gw2.table.ipEntries(0)).toBe(0);
  });

  test('without the limit, no per-IP entry is made', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener(echo.port, {});
    const p = await probe(gw.port);
    expect(p.result).toBe('open');
    expect(gw.table.ipEntries(0)).toBe(0);
    expect(gw.l.describe()).not.toHaveProperty('perIpUntracked');
    await p.close();
  });
});
