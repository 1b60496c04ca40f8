import net from 'node:net';
import { once } from 'node:events';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import { ShardActor, type ShardHost } from '../../src/actors/shard.ts';
import { InThreadShardHost, PiscinaShardHost } from '../../src/workers/pool.ts';
import { StateTable, L, B } from '../../src/workers/state-table.ts';
import type { ShardConfig } from '../../src/workers/shard-config.ts';
import type { FromShard, ShardInit, ShardResult } from '../../src/workers/protocol.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';
import { tcpShardConfig } from '../helpers/shard-config.ts';

const log = pino({ level: 'silent' });

function shardConfig(backendPort: number, port = 0, shutdownTimeoutMs = 5_000, maxConnections = 100): ShardConfig {
  return tcpShardConfig(backendPort, { port, shutdownTimeoutMs, maxConnections, maxConnectionsPerIp: 100 });
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

/** Every count of listener 0 and backend 0 on shard 0, as the table holds them now. */
function counts(table: StateTable): { active: number; all: number; backend: number; share: number; perIp: number } {
  return { active: table.listenerGet(0, 0, L.ACTIVE), all: table.listenerActiveAll(0), backend: table.backendGet(0, B.ACTIVE), share: table.backendShardActive(0, 0), perIp: table.ipEntries(0) };
}
const ZERO = { active: 0, all: 0, backend: 0, share: 0, perIp: 0 };

describe.each([
  ['a worker thread (piscina)', () => new PiscinaShardHost(1, log), true],
  ['the main thread', () => new InThreadShardHost(log), false],
] as const)('a shard in %s whose supervisor gives up', (_, makeHost, reusePort) => {
  test('kills the listeners a reload retired, with their connections, before it reports failure', async () => {
    await using echo = await startEchoServer();
    const host = makeHost();
    const table = StateTable.create();
    // A retired listener would drain for a minute.
    const s = shard(host, table, shardConfig(echo.port, 0, 60_000), reusePort);
    await s.actor.start();
    const old = await connect(s.port());
    expect(await old.send('a')).toBe('a');
    // A reload moves the listener (port 0 again: a new port); the old one retires with `old` open.
    await s.actor.request({ type: 'config', config: shardConfig(echo.port, 0, 60_000) });
    const [tree] = await s.actor.remoteTree({ depth: 1 });
    expect(tree!.children.filter((c) => c.retiring)).toHaveLength(1);
    // Crash the current listener past the shard supervisor's intensity (10 in 10 s).
    const down = s.actor.exited();
    for (let i = 0; i < 100 && s.actor.status !== 'exited'; i++) await s.actor.request({ type: 'crash-actor', actor: 'listener:t' }).catch(() => false);
    expect((await down).reason).toBe('error');
    // The retired listener's connection was closed by the gateway, not left alive in the thread.
    await expect.poll(() => old.socket.readableEnded || old.socket.destroyed, { timeout: 10_000 }).toBe(true);
    await old.close();
    await s.actor.handedBack();
    expect(counts(table)).toEqual(ZERO);
    await host.close();
  });
});

/**
 * A host whose shard goes on running after the abort until the test lets it stop, as a worker
 * thread goes on until it is terminated. It settles once the shard's code has stopped (the host
 * contract), so the ShardActor must not give anything back before.
 */
class SlowKillHost implements ShardHost {
  readonly watchable = false;
  readonly #inner = new InThreadShardHost(log);
  #stop!: () => void;
  readonly stopped = new Promise<void>((r) => (this.#stop = r));
  /** Lets the aborted shard stop (it kills what it still has, then settles). */
  letStop(): void {
    this.#stop();
  }
  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult> {
    const late = new AbortController();
    signal.addEventListener('abort', () => void this.stopped.then(() => late.abort()), { once: true });
    return this.#inner.run(init, port, late.signal);
  }
}

describe('a killed shard gives its counts back', () => {
  test('only once its code has stopped: connections closing meanwhile never count twice', async () => {
    await using echo = await startEchoServer();
    const host = new SlowKillHost();
    const table = StateTable.create();
    const s = shard(host, table, shardConfig(echo.port, 0, 5_000, 3), false);
    await s.actor.start();
    const conns = await Promise.all([0, 1, 2].map(() => connect(s.port())));
    for (const c of conns) expect(await c.send('x')).toBe('x');
    expect(counts(table)).toEqual({ active: 3, all: 3, backend: 3, share: 3, perIp: 1 });

    const down = await s.actor.shutdown('brutal');
    expect(down.reason).toBe('killed');
    // The actor is gone but its shard still runs: its places stay taken (maxConnections holds).
    expect(counts(table)).toMatchObject({ active: 3, all: 3 });
    // Two connections end while the shard still runs: each counts itself down, once.
    for (const c of conns.slice(0, 2)) {
      await c.close();
      await expect.poll(() => table.listenerGet(0, 0, L.ACTIVE)).toBe(3 - 1 - conns.indexOf(c));
      expect(table.listenerActiveAll(0)).toBe(table.listenerGet(0, 0, L.ACTIVE));
    }
    const lastClosed = new Promise<void>((r) => conns[2]!.socket.once('end', () => r()));
    host.letStop();
    await s.actor.handedBack();
    await lastClosed;
    await conns[2]!.close();
    expect(counts(table)).toEqual(ZERO);
    // Nothing went below zero on the way: the shard's own count-downs were the only ones.
    expect(table.listenerGet(0, 0, L.ERROR)).toBe(0);
  });

  test('a piscina shard task ends only after its thread has exited', async () => {
    await using echo = await startEchoServer();
    const host = new PiscinaShardHost(1, log);
    const table = StateTable.create();
    const { port1, port2 } = new MessageChannel();
    const ready = new Promise<void>((r) => port1.on('message', (m: FromShard) => m.type === 'ready' && r()));
    const abort = new AbortController();
    const run = host.run({ shard: 0, config: shardConfig(echo.port), buffers: table.buffers, reusePort: true }, port2, abort.signal);
    run.catch(() => {});
    await ready;
    const [thread] = host.pool.threads as Worker[];
    let exited = false;
    thread!.once('exit', () => (exited = true));
    abort.abort();
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(exited).toBe(true);
    port1.close();
    await host.close();
  });
});

describe('the watchdog', () => {
  test('a reloaded limit applies at once: beats speed up, and a hung thread is killed as hung', async () => {
    await using echo = await startEchoServer();
    const host = new PiscinaShardHost(1, log);
    const table = StateTable.create();
    const config = { ...shardConfig(echo.port), watchdogMs: 60_000 };
    const s = shard(host, table, config, true);
    await s.actor.start();
    expect(s.actor.watched).toBe(true);
    // The same listener (on the port it got), a shorter watchdog.
    await s.actor.request({ type: 'config', config: { ...shardConfig(echo.port, s.port()), watchdogMs: 200 } });
    // Beats every 20 ms now: ten of them come well within the new 200 ms limit, and no false alarm.
    const from = table.shardBeats(0);
    await expect.poll(() => table.shardBeats(0) - from, { timeout: 5_000, interval: 10 }).toBeGreaterThanOrEqual(10);
    expect(s.actor.status).toBe('running');

    const open = await connect(s.port());
    expect(await open.send('x')).toBe('x');
    const down = s.actor.exited();
    const hungAt = performance.now();
    s.actor.post({ type: 'hang' });
    const d = await down;
    expect(d.reason).toBe('hung');
    expect((d.error as Error).message).toMatch(/hung: no heartbeat for \d+ ms/);
    expect(performance.now() - hungAt).toBeLessThan(200 + 3_000);
    // The thread is gone with its sockets; its places were given back before the DOWN.
    await expect.poll(() => open.socket.readableEnded || open.socket.destroyed, { timeout: 10_000 }).toBe(true);
    expect(counts(table)).toEqual(ZERO);
    await open.close();
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
