import { afterEach, describe, expect, test } from 'vitest';
import { transition } from 'xstate';
import { WebSocket, type ClientOptions } from 'ws';
import { L } from '../../src/workers/state-table.ts';
import { pickNode, shardOfClient } from '../../src/hub/messages.ts';
import { clientProxyMachine, type ClientEvent, type ClientProxyActor } from '../../src/actors/client-proxy.ts';
import { actorEvents$, setActorEventsEnabled, type ActorEvent } from '../../src/runtime/events.ts';

/** The default `clientRateLimit` burst (hubSettings in harness.ts). */
const BURST = 200;
import type { HubListenerActor } from '../../src/actors/hub-listener.ts';
import { ShardHarness, TestClient, hubListener, hubListeners, liveClients, tokenFor, until } from './harness.ts';

/** The client actor of a connected test client. */
function actorOf(c: TestClient): ClientProxyActor {
  const a = liveClients().find((x) => x.clientId === c.clientId);
  if (!a) throw new Error(`no live client actor ${c.clientId}`);
  return a;
}

function theListener(): HubListenerActor {
  const [l] = hubListeners();
  if (!l) throw new Error('no hub listener');
  return l;
}

/** Exactly one hub-client-down for this client, and the listener's registry empty in every index. */
async function expectGoneOnce(h: ShardHarness, c: TestClient): Promise<void> {
  await until(() => h.of('hub-client-down').some((m) => m.clientId === c.clientId), `hub-client-down of ${c.clientId}`);
  await until(() => !liveClients().some((a) => a.clientId === c.clientId), 'the client actor to exit');
  // A barrier: anything the shard would still post about it has been posted by now.
  await h.request({ type: 'counts', id: 0 });
  expect(h.of('hub-client-down').filter((m) => m.clientId === c.clientId)).toHaveLength(1);
}

function expectEmptyRegistry(l: HubListenerActor): void {
  expect(l.clients.sizes()).toEqual({ byId: 0, user: 0, node: 0 });
}

const CLIENT_EVENTS: ClientEvent[] = ['welcome', 'close', 'closed', 'kill', 'crash'];
/** Whether some event takes {@link clientProxyMachine} from `from` to `to` (asked of xstate itself). */
function legal(from: string, to: string): boolean {
  const snap = clientProxyMachine.resolveState({ value: from, context: {} });
  return CLIENT_EVENTS.some((type) => snap.can({ type }) && transition(clientProxyMachine, snap, { type })[0].value === to);
}

afterEach(() => setActorEventsEnabled(false));

describe('client lifecycle', () => {
  test('welcome, then hub-client-up; the client is in the user index; a clean close posts one hub-client-down', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    const c = await TestClient.connect(h.hubPort, await tokenFor('u1'));
    expect(c.frames).toEqual([{ type: 'welcome', clientId: c.clientId, userId: 'u1' }]);
    expect(c.clientId).toMatch(/^0\.[A-Za-z0-9_-]{16}$/);
    expect(shardOfClient(c.clientId)).toBe(0);
    const up = await h.waitFor((m) => m.type === 'hub-client-up');
    expect(up).toEqual({ type: 'hub-client-up', listener: 'hub', clientId: c.clientId, userId: 'u1' });
    const l = theListener();
    expect(l.clients.lookup('user', 'u1').map((e) => e.actor.id)).toEqual([`client:${c.clientId}`]);
    expect(actorOf(c).state).toBe('registered');
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(1);
    // The tree shows it under the listener.
    const tree = (await h.request({ type: 'tree', id: 0, opts: {} })) as { children: { id: string; children: { id: string; type: string; state: string }[] }[] };
    expect(tree.children[0]!.children).toEqual([expect.objectContaining({ id: `client:${c.clientId}`, type: 'client-proxy', state: 'registered' })]);
    await c.close();
    expect(c.closeInfo?.code).toBe(1005);
    await expectGoneOnce(h, c);
    expect(h.of('hub-client-down')[0]).toEqual({ type: 'hub-client-down', listener: 'hub', clientId: c.clientId, userId: 'u1' });
    expectEmptyRegistry(l);
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(h.table.listenerGet(0, 0, L.OK)).toBe(1);
    expect(h.table.ipEntries(0)).toBe(0);
  });

  test('every exit path posts exactly one hub-client-down and empties every registry index', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { pingIntervalMs: 100, maxMessageSize: 1024 })], ready: ['n1', 'n2'] });
    const l = theListener();
    const bound = async (user: string, opts?: ClientOptions): Promise<TestClient> => {
      const c = await TestClient.connect(h.hubPort, await tokenFor(user), opts);
      c.sendJson({ type: 'send', data: 'bind me' });
      await until(() => actorOf(c).nodes.length === 1, 'a node binding');
      return c;
    };
    // 1. network drop (the client's socket is destroyed, no close frame)
    const drop = await bound('u-drop');
    expect(l.clients.sizes()).toMatchObject({ byId: 1, user: 1, node: 1 });
    await drop.terminate();
    await expectGoneOnce(h, drop);
    // 2. ping timeout (the client never answers pings)
    const mute = await bound('u-mute', { autoPong: false });
    const muteDown = await mute.closed;
    expect(muteDown.code).toBe(1006);
    await expectGoneOnce(h, mute);
    expect(h.table.listenerGet(0, 0, L.TIMEOUT)).toBe(1);
    // 3. the actor crashes
    const boom = await bound('u-crash');
    actorOf(boom).crash(new Error('injected'));
    await boom.closed;
    await expectGoneOnce(h, boom);
    // 4. the actor is killed
    const killed = await bound('u-kill');
    actorOf(killed).kill();
    expect((await killed.closed).code).toBe(1001);
    await expectGoneOnce(h, killed);
    // 5. binary frame (1003), oversize frame (1009)
    const bin = await bound('u-bin');
    bin.ws.send(Buffer.from([1, 2, 3]));
    expect((await bin.closed).code).toBe(1003);
    await expectGoneOnce(h, bin);
    const big = await bound('u-big');
    big.ws.send('x'.repeat(2048));
    expect((await big.closed).code).toBe(1009);
    await expectGoneOnce(h, big);
    expect(h.table.listenerGet(0, 0, L.HUB_DROP_OVERSIZE)).toBe(1);
    expectEmptyRegistry(l);
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(h.table.listenerActiveAll(0)).toBe(0);
    expect(h.table.ipEntries(0)).toBe(0);
  });

  test('a client killed with its listener, and clients of a draining shard, each post one hub-client-down', async () => {
    const h = await ShardHarness.start({ ready: ['n1'] });
    try {
      const a = await TestClient.connect(h.hubPort, await tokenFor('u1'));
      const first = theListener();
      // The listener is killed (as at a drain deadline): its client goes with it; the shard's
      // supervisor restarts the listener on the same port.
      first.kill();
      expect((await a.closed).code).toBe(1001);
      await expectGoneOnce(h, a);
      await until(() => hubListeners().some((x) => x !== first && x.state === 'listening'), 'the restarted listener');
      // Drain: one client leaves by itself (the drain waits for it), one is kept until the deadline.
      const b = await TestClient.connect(h.hubPort, await tokenFor('u2'));
      const c = await TestClient.connect(h.hubPort, await tokenFor('u3'));
      h.send({ type: 'drain', timeoutMs: 300 });
      await until(() => theListener().state === 'draining');
      // Still served while draining.
      h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId: 'u2' }, frame: '{"type":"message","from":"n1","data":1}' });
      await b.next((f) => f.type === 'message');
      await b.close();
      await until(() => h.of('hub-client-down').some((m) => m.clientId === b.clientId));
      expect((await c.closed).code).toBe(1001);
      expect(await h.done).toEqual({ ok: true });
      for (const x of [b, c]) expect(h.of('hub-client-down').filter((m) => m.clientId === x.clientId)).toHaveLength(1);
      expect(liveClients()).toHaveLength(0);
      expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    } finally {
      await h.stop(100);
    }
  });
});

describe('client frames', () => {
  test('send: sticky node by rendezvous hash, or the explicit node; each binding is indexed', async () => {
    const ready = ['n1', 'n2', 'n3'];
    await using h = await ShardHarness.start({ ready });
    const c = await TestClient.connect(h.hubPort, await tokenFor('alice'));
    const sticky = pickNode('alice', ready)!;
    const other = ready.find((n) => n !== sticky)!;
    c.sendJson({ type: 'send', data: { text: 'hi', n: [1, 2] } });
    c.sendJson({ type: 'send', data: 'again' });
    c.sendJson({ type: 'send', node: other, data: null });
    await until(() => h.of('hub-send').length === 3);
    const [s1, s2, s3] = h.of('hub-send');
    expect(s1).toEqual({ type: 'hub-send', listener: 'hub', node: sticky, clientId: c.clientId, frame: expect.any(String) });
    expect(JSON.parse(s1!.frame)).toEqual({ type: 'client-message', clientId: c.clientId, userId: 'alice', data: { text: 'hi', n: [1, 2] } });
    expect(s2!.node).toBe(sticky);
    expect(s3!.node).toBe(other);
    expect(JSON.parse(s3!.frame)).toEqual({ type: 'client-message', clientId: c.clientId, userId: 'alice', data: null });
    const l = theListener();
    expect(actorOf(c).nodes).toEqual([sticky, other]);
    expect(l.clients.count('node', sticky)).toBe(1);
    expect(l.clients.count('node', other)).toBe(1);
    expect(h.table.listenerGet(0, 0, L.HUB_IN)).toBe(3);
    // Nothing was sent back to the client for a send.
    expect(c.frames).toHaveLength(1);
    await c.close();
  });

  test('request: a gateway-scoped id, the client id kept as reqId; the reply reaches the client; a reply to a gone client is dropped', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    const c = await TestClient.connect(h.hubPort, await tokenFor('bob'));
    c.sendJson({ type: 'request', id: 'r1', data: { q: 1 } });
    c.sendJson({ type: 'request', id: 'r2', node: 'n1', data: 2 });
    await until(() => h.of('hub-request').length === 2);
    const [r1, r2] = h.of('hub-request');
    expect(r1).toMatchObject({ type: 'hub-request', listener: 'hub', node: 'n1', clientId: c.clientId, reqId: 'r1' });
    expect(r1!.gid).toMatch(/^0-\d+$/);
    expect(r2!.gid).not.toBe(r1!.gid);
    expect(JSON.parse(r1!.frame)).toEqual({ type: 'request', id: r1!.gid, clientId: c.clientId, userId: 'bob', data: { q: 1 } });
    h.send({ type: 'hub-reply', listener: 'hub', clientId: c.clientId, frame: JSON.stringify({ type: 'response', id: 'r1', data: 'ok' }) });
    expect(await c.next((f) => f.type === 'response')).toEqual({ type: 'response', id: 'r1', data: 'ok' });
    h.send({ type: 'hub-reply', listener: 'hub', clientId: '0.nobodyhere00000', frame: '{"type":"response","id":"x","data":1}' });
    h.send({ type: 'hub-reply', listener: 'nope', clientId: c.clientId, frame: '{"type":"response","id":"x","data":1}' });
    await h.request({ type: 'counts', id: 0 });
    expect(c.frames.filter((f) => f.type === 'response')).toHaveLength(1);
    await c.close();
  });

  test('node_unavailable: no ready node, or an explicit node that is not ready (with the request id)', async () => {
    await using h = await ShardHarness.start();
    const c = await TestClient.connect(h.hubPort, await tokenFor('carol'));
    c.sendJson({ type: 'send', data: 1 });
    expect(await c.next((f) => f.type === 'error')).toEqual({ type: 'error', code: 'node_unavailable' });
    await h.setReady(['n1']);
    c.sendJson({ type: 'request', id: 'q9', node: 'n7', data: 1 });
    expect(await c.next((f) => f.id === 'q9')).toEqual({ type: 'error', id: 'q9', code: 'node_unavailable' });
    expect(h.table.listenerGet(0, 0, L.HUB_DROP_UNAVAILABLE)).toBe(2);
    expect(h.of('hub-send')).toHaveLength(0);
    expect(h.of('hub-request')).toHaveLength(0);
    expect(actorOf(c).nodes).toEqual([]);
    await c.close();
  });

  test('bad_request for malformed JSON, unknown types and missing or invalid fields; the client stays connected', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    const c = await TestClient.connect(h.hubPort, await tokenFor('dave'));
    const bad: [string, Record<string, unknown>][] = [
      ['{not json', { type: 'error', code: 'bad_request' }],
      ['[1,2]', { type: 'error', code: 'bad_request' }],
      ['"send"', { type: 'error', code: 'bad_request' }],
      ['{"type":"subscribe","id":"s1"}', { type: 'error', id: 's1', code: 'bad_request' }],
      ['{"data":1}', { type: 'error', code: 'bad_request' }],
      ['{"type":"send"}', { type: 'error', code: 'bad_request' }],
      ['{"type":"send","node":7,"data":1}', { type: 'error', code: 'bad_request' }],
      ['{"type":"request","data":1}', { type: 'error', code: 'bad_request' }],
      ['{"type":"request","id":5,"data":1}', { type: 'error', id: 5, code: 'bad_request' }],
      ['{"type":"request","id":"","data":1}', { type: 'error', id: '', code: 'bad_request' }],
      ['{"type":"request","id":"r1"}', { type: 'error', id: 'r1', code: 'bad_request' }],
    ];
    for (const [text] of bad) c.ws.send(text);
    await until(() => c.frames.length === 1 + bad.length);
    expect(c.frames.slice(1)).toEqual(bad.map(([, e]) => e));
    expect(h.table.listenerGet(0, 0, L.HUB_DROP_BAD)).toBe(bad.length);
    c.sendJson({ type: 'send', data: 'still here' });
    await until(() => h.of('hub-send').length === 1);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    await c.close();
  });

  test('a flood gets rate_limited errors, then close 1008; other clients are served meanwhile', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    const calm = await TestClient.connect(h.hubPort, await tokenFor('calm'));
    const flood = await TestClient.connect(h.hubPort, await tokenFor('flood'));
    const n = 8 * BURST;
    for (let i = 0; i < n; i++) flood.ws.send(i % 2 ? '{"type":"send","data":1}' : `{"type":"request","id":"f${i}","data":1}`);
    expect((await flood.closed).code).toBe(1008);
    const limited = flood.frames.filter((f) => f.code === 'rate_limited');
    expect(limited.length).toBeGreaterThan(0);
    // A refused request is told which one.
    expect(limited.some((f) => typeof f.id === 'string')).toBe(true);
    const admitted = h.table.listenerGet(0, 0, L.HUB_IN);
    expect(admitted).toBeGreaterThanOrEqual(BURST);
    // The burst, plus what refilled while the flood was sent (100/s).
    expect(admitted).toBeLessThan(2 * BURST);
    expect(h.table.listenerGet(0, 0, L.HUB_DROP_RATE)).toBeGreaterThan(4 * BURST);
    await expectGoneOnce(h, flood);
    calm.sendJson({ type: 'send', data: 'fine' });
    await until(() => h.of('hub-send').some((m) => m.clientId === calm.clientId));
    expect(calm.frames.filter((f) => f.type === 'error')).toEqual([]);
    await calm.close();
  });

  test('keepalive: a client that answers pings stays; one that does not is terminated after two intervals', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { pingIntervalMs: 50 })] });
    const good = await TestClient.connect(h.hubPort, await tokenFor('good'));
    let pings = 0;
    good.ws.on('ping', () => pings++);
    const mute = await TestClient.connect(h.hubPort, await tokenFor('mute'), { autoPong: false });
    const t0 = Date.now();
    await mute.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    await expectGoneOnce(h, mute);
    await until(() => pings >= 4, 'more pings to the good client');
    expect(good.ws.readyState).toBe(WebSocket.OPEN);
    expect(actorOf(good).state).toBe('registered');
    await good.close();
  });
});

describe('state changes', () => {
  test('a killed and a crashed client show only changes the machine allows, end in closed, then one down each', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    setActorEventsEnabled(true);
    const events: ActorEvent[] = [];
    const sub = actorEvents$.subscribe((e) => e.actorType === 'client-proxy' && events.push(e));
    const k = await TestClient.connect(h.hubPort, await tokenFor('u-kill'));
    const c = await TestClient.connect(h.hubPort, await tokenFor('u-crash'));
    const killed = actorOf(k);
    const crashed = actorOf(c);
    killed.kill();
    expect(crashed.crash(new Error('injected'))).toBe(true);
    // Armed: thrown from the next WebSocket event of the client (here, a frame it sends).
    c.sendJson({ type: 'send', data: 'x' });
    await Promise.all([k.closed, c.closed]);
    await until(() => events.filter((e) => e.type === 'down').length === 2, 'two downs');
    sub.unsubscribe();
    for (const [actor, reason] of [[killed, 'killed'], [crashed, 'error']] as const) {
      let state = 'handshaking';
      const mine = events.filter((e) => e.id === actor.id);
      for (const e of mine.filter((x) => x.type === 'state')) {
        const next = (e as { state: string }).state;
        expect(legal(state, next), `${actor.id}: ${state} -> ${next}`).toBe(true);
        state = next;
      }
      expect(state).toBe('closed');
      expect(mine.at(-1)).toMatchObject({ type: 'down', reason });
      await expectGoneOnce(h, actor === killed ? k : c);
    }
    expect(h.table.listenerGet(0, 0, L.ERROR)).toBe(1);
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(0);
    expect(h.table.ipEntries(0)).toBe(0);
  });
});
