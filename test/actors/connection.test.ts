import net from 'node:net';
import { refusedPort } from '../helpers/ports.ts';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import pino from 'pino';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { transition } from 'xstate';
import { ListenerActor } from '../../src/actors/listener.ts';
import { ConnectionActor, connectionMachine, type ConnectionEventType } from '../../src/actors/connection.ts';
import { Balancer } from '../../src/workers/balancer.ts';
import { StateTable, L, B } from '../../src/workers/state-table.ts';
import type { ShardUpstream } from '../../src/workers/shard-config.ts';
import { actorEvents$, setActorEventsEnabled, type ActorEvent } from '../../src/runtime/events.ts';
import { live } from '../../src/runtime/live.ts';
import { connect, readUntilClosed, roundTrip, startEchoServer } from '../helpers/net.ts';

const log = pino({ level: 'silent' });

async function startListener(backends: number[], mode: 'light' | 'xstate' = 'light', table = StateTable.create(), maxConnections = 100, idleTimeoutMs = 0, connectTimeoutMs = 1_000) {
  const upstream: ShardUpstream = {
    name: 'app',
    balance: 'round_robin',
    connectTimeoutMs,
    connectRetries: 2,
    failureThreshold: 0,
    backends: backends.map((port, i) => ({ address: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, slot: i })),
  };
  const l = await new ListenerActor({
    shard: 0,
    listener: { name: 't', protocol: 'tcp', host: '127.0.0.1', port: 0, upstream: 'app', maxConnections, maxConnectionsPerIp: 0, idleTimeoutMs, slot: 0 },
    upstream,
    balancer: new Balancer(upstream, table),
    table,
    log,
    connectionActor: mode,
    reusePort: false,
  }).start();
  return { l, table, port: l.address!.port, [Symbol.asyncDispose]: async () => void (await l.shutdown('brutal')) };
}

afterEach(() => setActorEventsEnabled(false));

const EVENTS: ConnectionEventType[] = ['backend.connected', 'client.end', 'backend.end', 'abort', 'sockets.closed', 'kill', 'crash'];
/** Whether some event takes {@link connectionMachine} from `from` to `to` (asked of xstate itself, not the compiled table). */
function legal(from: string, to: string): boolean {
  const snap = connectionMachine.resolveState({ value: from, context: {} });
  return EVENTS.some((type) => snap.can({ type }) && transition(connectionMachine, snap, { type })[0].value === to);
}

describe.each(['light', 'xstate'] as const)('ConnectionActor (%s)', (mode) => {
  test('walks connecting, open, half-closed, closing, closed and leaves the registry by its DOWN', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener([echo.port], mode);
    setActorEventsEnabled(true);
    const events: ActorEvent[] = [];
    const sub = actorEvents$.subscribe((e) => e.actorType === 'connection' && events.push(e));
    expect(await roundTrip(gw.port, 'ping')).toBe('ping');
    await expect.poll(() => events.some((e) => e.type === 'down')).toBe(true);
    sub.unsubscribe();
    expect(events.filter((e) => e.type === 'state').map((e) => (e as { state: string }).state)).toEqual(['open', 'half_closed_client', 'closing', 'closed']);
    expect(events.at(-1)).toMatchObject({ type: 'down', reason: 'normal' });
    expect(gw.l.connections.sizes()).toEqual({ byId: 0 });
    expect(gw.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(gw.table.listenerGet(0, 0, L.OK)).toBe(1);
    expect(gw.table.backendGet(0, B.ACTIVE)).toBe(0);
    expect(live.countsByType().connection ?? 0).toBe(0);
  });

  test('balances round robin and retries a refused backend on the next one', async () => {
    await using a = await startEchoServer();
    await using b = await startEchoServer();
    // A port with nothing listening: connects are refused.
    const deadPort = await refusedPort();
    let servedA = 0;
    let servedB = 0;
    a.server.on('connection', () => servedA++);
    b.server.on('connection', () => servedB++);
    await using gw = await startListener([a.port, deadPort, b.port], mode);
    for (let i = 0; i < 6; i++) expect(await roundTrip(gw.port, `m${i}`)).toBe(`m${i}`);
    // The dead backend's turns went to the next live one: no client saw the failure.
    expect(servedA + servedB).toBe(6);
    expect(servedA).toBeGreaterThanOrEqual(2);
    expect(servedB).toBeGreaterThanOrEqual(2);
    expect(gw.table.listenerGet(0, 0, L.OK)).toBe(6);
  });

  test('with every backend down, the client is closed and the outcome counted', async () => {
    const deadPort = await refusedPort();
    await using gw = await startListener([deadPort], mode);
    expect(await readUntilClosed(gw.port, 'nobody home')).toBe('');
    await expect.poll(() => gw.table.listenerGet(0, 0, L.BACKEND_ERROR)).toBe(1);
    expect(gw.l.connections.size).toBe(0);
    gw.table.backendSet(0, B.HEALTHY, 0);
    expect(await readUntilClosed(gw.port, 'unhealthy')).toBe('');
    await expect.poll(() => gw.table.listenerGet(0, 0, L.NO_BACKEND)).toBe(1);
  });
});

describe('backpressure', () => {
  test('a client that does not read stops the backend instead of filling the gateway', async () => {
    const total = 64 * 1024 * 1024;
    let accepted = 0;
    let backendSocket: net.Socket | undefined;
    const server = net.createServer((s) => {
      backendSocket = s;
      s.on('error', () => {});
      const chunk = Buffer.alloc(64 * 1024, 1);
      const pump = (): void => {
        while (accepted < total) {
          accepted += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            server.emit('blocked');
            return;
          }
        }
        s.end();
      };
      pump();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    await using gw = await startListener([(server.address() as net.AddressInfo).port]);
    const client = net.connect({ port: gw.port, host: '127.0.0.1' });
    client.pause();
    await once(server, 'blocked');
    // Let the pipes settle: wait until the backend has been blocked for a while without progress.
    let last = -1;
    await expect.poll(() => {
      const stable = accepted === last;
      last = accepted;
      return stable;
    }, { interval: 50, timeout: 5_000 }).toBe(true);
    // Only socket buffers hold data: far less than what the backend wanted to send.
    expect(accepted).toBeLessThan(16 * 1024 * 1024);
    let received = 0;
    client.on('data', (d: Buffer) => (received += d.length));
    client.resume();
    await once(client, 'end');
    expect(received).toBe(total);
    client.destroy();
    backendSocket?.destroy();
    server.close();
    await once(server, 'close');
  });
});

describe('listener limits', () => {
  test('maxConnections closes the excess at once, counts it, and frees places as connections end', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener([echo.port], 'light', StateTable.create(), 2);
    const a = await connect(gw.port);
    const b = await connect(gw.port);
    expect(await a.send('a')).toBe('a');
    expect(await b.send('b')).toBe('b');
    expect(await readUntilClosed(gw.port, 'third')).toBe('');
    expect(gw.table.listenerGet(0, 0, L.OVER_LIMIT)).toBe(1);
    expect(gw.table.listenerActiveAll(0)).toBe(2);
    await a.close();
    await expect.poll(() => gw.table.listenerActiveAll(0)).toBe(1);
    const c = await connect(gw.port);
    expect(await c.send('c')).toBe('c');
    await Promise.all([b.close(), c.close()]);
    await expect.poll(() => gw.table.listenerActiveAll(0)).toBe(0);
  });
});

describe('resets', () => {
  test('a client reset reaches the backend as a reset, and a backend reset reaches the client', async () => {
    const resets: string[] = [];
    const server = net.createServer((s) => {
      s.on('error', (e: NodeJS.ErrnoException) => resets.push(`backend saw ${e.code}`));
      s.on('data', (d) => {
        if (String(d) === 'reset me') s.resetAndDestroy();
        else s.write(d);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    await using gw = await startListener([(server.address() as net.AddressInfo).port]);
    // Client side resets.
    const a = await connect(gw.port);
    expect(await a.send('hi')).toBe('hi');
    a.socket.resetAndDestroy();
    await expect.poll(() => resets).toEqual(['backend saw ECONNRESET']);
    // Backend side resets.
    const b = await connect(gw.port);
    expect(await b.send('hi')).toBe('hi');
    const err = new Promise<string | undefined>((r) => b.socket.on('error', (e: NodeJS.ErrnoException) => r(e.code)));
    b.socket.write('reset me');
    expect(await err).toBe('ECONNRESET');
    await b.close();
    await expect.poll(() => gw.l.connections.size).toBe(0);
    server.close();
    await once(server, 'close');
  });
});

describe('idle timeout', () => {
  test('a connection with no bytes either way for idleTimeout is closed on both sides', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener([echo.port], 'light', StateTable.create(), 100, 150);
    const c = await connect(gw.port);
    expect(await c.send('busy')).toBe('busy');
    expect(echo.sockets.size).toBe(1);
    // No bytes for 150 ms: the gateway closes its side towards the client and the backend.
    await new Promise<void>((r) => c.socket.once('end', () => r()));
    await expect.poll(() => echo.sockets.size).toBe(0);
    await expect.poll(() => gw.l.connections.size).toBe(0);
    expect(gw.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    await c.close();
  });
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

describe('connect timeout', () => {
  test('a backend that never answers times out, and the next backend serves the client', async () => {
    await using hole = await startBlackhole();
    await using echo = await startEchoServer();
    await using gw = await startListener([hole.port, echo.port], 'light', StateTable.create(), 100, 0, 200);
    // Round robin tries the blackhole first: it times out, and the retry goes to echo.
    expect(await roundTrip(gw.port, 'through')).toBe('through');
    expect(gw.table.listenerGet(0, 0, L.OK)).toBe(1);
    await using only = await startListener([hole.port], 'light', StateTable.create(), 100, 0, 200);
    expect(await readUntilClosed(only.port, 'nobody')).toBe('');
    await expect.poll(() => only.table.listenerGet(0, 0, L.TIMEOUT)).toBe(1);
  });
});

describe.each(['light', 'xstate'] as const)('state changes (%s)', (mode) => {
  test('a killed and a crashed connection show only changes the machine allows, end in closed, then one down each', async () => {
    await using echo = await startEchoServer();
    await using gw = await startListener([echo.port], mode);
    setActorEventsEnabled(true);
    const events: ActorEvent[] = [];
    const sub = actorEvents$.subscribe((e) => e.actorType === 'connection' && events.push(e));
    const a = await connect(gw.port);
    expect(await a.send('a')).toBe('a');
    const b = await connect(gw.port);
    expect(await b.send('b')).toBe('b');
    const [killed, crashed] = [...gw.l.connections.values()].map((e) => e.actor as ConnectionActor);
    killed!.kill();
    crashed!.crash(new Error('injected'));
    b.socket.write('x');
    await expect.poll(() => events.filter((e) => e.type === 'down').length).toBe(2);
    sub.unsubscribe();
    for (const [actor, reason] of [[killed!, 'killed'], [crashed!, 'error']] as const) {
      const mine = events.filter((e) => e.id === actor.id);
      let state = 'connecting';
      for (const e of mine.filter((x) => x.type === 'state')) {
        const next = (e as { state: string }).state;
        expect(legal(state, next), `${actor.id}: ${state} -> ${next}`).toBe(true);
        state = next;
      }
      expect(state).toBe('closed');
      expect(actor.state).toBe('closed');
      expect(mine.at(-1)).toMatchObject({ type: 'down', reason });
    }
    expect(events.find((e) => e.type === 'down' && e.id === crashed!.id)).toMatchObject({ error: 'injected' });
    // Places given back exactly once: nothing active, the crash counted as outcome error.
    expect(gw.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(gw.table.listenerActiveAll(0)).toBe(0);
    expect(gw.table.backendGet(0, B.ACTIVE)).toBe(0);
    expect(gw.table.listenerGet(0, 0, L.ERROR)).toBe(1);
    await Promise.all([a.close(), b.close()]);
  });
});

/** Connects from `localAddress`, writes a byte, and resolves with what came back once the gateway closed it. */
async function closedFrom(port: number, localAddress: string): Promise<string> {
  const c = net.connect({ port, host: '127.0.0.1', localAddress });
  c.on('error', () => {});
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  c.write('x');
  await once(c, 'close', { signal: AbortSignal.timeout(10_000) });
  return got;
}

describe('a throw while a connection is taken in', () => {
  test('in the connection (its backend pick) or before it has an actor: that socket alone is closed, counted error, logged with its address; the listener goes on', async () => {
    await using echo = await startEchoServer();
    const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(...String(c).split('\n').filter(Boolean).map((l) => JSON.parse(l))), cb()) }));
    const table = StateTable.create();
    const upstream: ShardUpstream = { name: 'app', balance: 'round_robin', connectTimeoutMs: 1_000, connectRetries: 0, failureThreshold: 0, backends: [{ address: `127.0.0.1:${echo.port}`, host: '127.0.0.1', port: echo.port, weight: 1, slot: 0 }] };
    const balancer = new Balancer(upstream, table);
    const l = await new ListenerActor({
      shard: 0,
      listener: { name: 't', protocol: 'tcp', host: '127.0.0.1', port: 0, upstream: 'app', maxConnections: 100, maxConnectionsPerIp: 1, idleTimeoutMs: 0, slot: 0 },
      upstream,
      balancer,
      table,
      log,
      connectionActor: 'light',
      reusePort: false,
    }).start();
    await using _ = { [Symbol.asyncDispose]: async () => void (await l.shutdown('brutal')) };
    const port = l.address!.port;
    const ok = await connect(port);
    expect(await ok.send('a')).toBe('a');

    // 1. A bug in the backend pick (inside the connection's start): the connection ends with DOWN error.
    const pick = vi.spyOn(balancer, 'pick').mockImplementationOnce(() => {
      throw new Error('pick bug');
    });
    expect(await closedFrom(port, '127.0.0.2')).toBe('');
    pick.mockRestore();
    await expect.poll(() => lines.some((x) => x.msg === 'connection handler failed: connection closed')).toBe(true);
    expect(lines.find((x) => x.msg === 'connection handler failed: connection closed')).toMatchObject({ level: 50, actorType: 'connection', remoteAddress: '127.0.0.2', err: { message: 'pick bug' } });

    // 2. A bug before the connection has an actor: the listener gives its places back itself.
    const adopt = vi.spyOn(ConnectionActor, 'adopt').mockImplementationOnce(() => {
      throw new Error('adopt bug');
    });
    expect(await closedFrom(port, '127.0.0.3')).toBe('');
    adopt.mockRestore();
    expect(lines.find((x) => x.msg === 'accepting a connection failed: connection closed')).toMatchObject({ level: 50, actorId: 'listener:t', remoteAddress: '127.0.0.3', err: { message: 'adopt bug' } });

    // Both counted as errors, every place of theirs given back; the first connection and new ones are served.
    await expect.poll(() => table.listenerGet(0, 0, L.ERROR)).toBe(2);
    expect(table.listenerActiveAll(0)).toBe(1);
    expect(table.listenerGet(0, 0, L.ACTIVE)).toBe(1);
    expect(table.ipEntries(0)).toBe(1);
    expect(await ok.send('b')).toBe('b');
    await ok.close();
    await expect.poll(() => table.ipEntries(0)).toBe(0);
    expect(await roundTrip(port, 'again')).toBe('again');
    expect(l.state).toBe('listening');
  });
});
