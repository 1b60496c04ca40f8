import net from 'node:net';
import { once } from 'node:events';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { ShardActor, type ShardHost } from '../../src/actors/shard.ts';
import { InThreadShardHost, PiscinaShardHost } from '../../src/workers/pool.ts';
import { StateTable, L } from '../../src/workers/state-table.ts';
import type { ShardConfig } from '../../src/workers/shard-config.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

const log = pino({ level: 'silent' });

function shardConfig(backendPort: number, port = 0, shutdownTimeoutMs = 5_000): ShardConfig {
  return {
    listeners: [{ name: 't', protocol: 'tcp', host: '127.0.0.1', port, upstream: 'app', maxConnections: 100, maxConnectionsPerIp: 0, idleTimeoutMs: 0, slot: 0 }],
    upstreams: [
      {
        name: 'app',
        balance: 'round_robin',
        connectTimeoutMs: 1_000,
        connectRetries: 1,
        failureThreshold: 0,
        backends: [{ address: `127.0.0.1:${backendPort}`, host: '127.0.0.1', port: backendPort, weight: 1, slot: 0 }],
      },
    ],
    connectionActor: 'light',
    shutdownTimeoutMs,
    debug: false,
    logLevel: 'silent',
  };
}

function shard(host: ShardHost, table: StateTable, config: ShardConfig, reusePort: boolean): { actor: ShardActor; port: () => number } {
  let bound = 0;
  const actor = new ShardActor({
    index: 0,
    host,
    table,
    log,
    init: () => ({ shard: 0, config, buffers: table.buffers, reusePort }),
    listenerSlots: () => [0],
    shutdownTimeoutMs: () => config.shutdownTimeoutMs,
    onReady: (ls) => (bound = ls[0]!.port),
  });
  return { actor, port: () => bound };
}

describe.each([
  ['a worker thread (piscina)', () => new PiscinaShardHost(1, log), true],
  ['the main thread', () => new InThreadShardHost(log), false],
] as const)('a shard in %s', (_, makeHost, reusePort) => {
  test('serves once ready, answers tree requests, and drains through its port', async () => {
    await using echo = await startEchoServer();
    const host = makeHost();
    const table = StateTable.create();
    const s = shard(host, table, shardConfig(echo.port), reusePort);
    await s.actor.start();
    expect(s.actor.state).toBe('running');
    expect(table.shardUp(0)).toBe(true);
    expect(await roundTrip(s.port(), 'hi')).toBe('hi');
    const [sub] = await s.actor.remoteTree({});
    expect(sub).toMatchObject({ id: 'shard-0:supervisor', type: 'supervisor', children: [{ id: 'listener:t', type: 'listener', state: 'listening' }] });
    const open = await connect(s.port());
    expect(await open.send('a')).toBe('a');
    const down = s.actor.exited();
    const stopping = s.actor.shutdown(10_000);
    // Draining: the open connection is still served, and ends the drain when it closes.
    expect(await open.send('b')).toBe('b');
    await open.close();
    await stopping;
    expect((await down).reason).toBe('shutdown');
    expect(table.shardUp(0)).toBe(false);
    expect(table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    await host.close();
  });

  test('is killed after its shutdown time when connections outlive the drain', async () => {
    await using echo = await startEchoServer();
    const host = makeHost();
    const table = StateTable.create();
    // The shard would drain for a minute; its supervisor gives it 200 ms.
    const s = shard(host, table, shardConfig(echo.port, 0, 60_000), reusePort);
    await s.actor.start();
    const open = await connect(s.port());
    expect(await open.send('x')).toBe('x');
    const ended = new Promise<void>((r) => open.socket.once('end', r));
    const down = await s.actor.shutdown(200);
    expect(down.reason).toBe('killed');
    // The gateway closed its side of the connection.
    await ended;
    await open.close();
    // The killed shard's connection was given back (once its thread had exited).
    await s.actor.handedBack();
    expect(table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(table.listenerActiveAll(0)).toBe(0);
    await host.close();
  });

  test('a crash becomes a DOWN with reason error', async () => {
    await using echo = await startEchoServer();
    const host = makeHost();
    const table = StateTable.create();
    const s = shard(host, table, shardConfig(echo.port), reusePort);
    await s.actor.start();
    const down = s.actor.exited();
    expect(s.actor.post({ type: 'crash' })).toBe(true);
    const d = await down;
    expect(d.reason).toBe('error');
    expect((d.error as { code: string }).code).toBe('GH_ERR_SHARD');
    // Its listening socket is released: soon nothing accepts on the port any more. (The task's
    // rejection can arrive a moment before the thread is gone, so poll with a deadline.)
    const refused = (): Promise<boolean> =>
      new Promise((resolve) => {
        const c = net.connect(s.port(), '127.0.0.1');
        c.once('connect', () => {
          c.destroy();
          resolve(false);
        });
        c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
      });
    await expect.poll(refused, { timeout: 10_000, interval: 20 }).toBe(true);
    await host.close();
  });
});

describe('start failures', () => {
  test('a listener that cannot bind fails the start with the listen error', async () => {
    const taken = net.createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const host = new InThreadShardHost(log);
    const table = StateTable.create();
    const s = shard(host, table, shardConfig(1, (taken.address() as net.AddressInfo).port), false);
    await expect(s.actor.start()).rejects.toMatchObject({ code: 'GH_ERR_SHARD', message: expect.stringMatching(/could not listen/) });
    expect(s.actor.status).toBe('exited');
    taken.close();
    await once(taken, 'close');
  });
});
