import { describe, expect, onTestFinished, test } from 'vitest';
import { HubNode } from '../helpers/hub-node.ts';
import { until } from '../helpers/daemon.ts';
import { parseNodeFrame } from '../../src/hub/hub-control.ts';
import { MAX_PENDING_PER_CLIENT } from '../../src/actors/hub-requests.ts';
import { DELIVER_BACKLOG_HIGH } from '../../src/hub/hub-control.ts';
import { actorEvents$, setActorEventsEnabled } from '../../src/runtime/events.ts';
import { hubListeners, startHubPlane } from './control-fixture.ts';

const requestFrame = (gid: string, clientId: string, data: unknown) => JSON.stringify({ type: 'request', id: gid, clientId, userId: 'u1', data });

describe('hub control plane: routing between shards and nodes', () => {
  test('hub-nodes: every running shard learns the ready nodes, and a shard that becomes ready too', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    await p.waitPosted((x) => x.shard === 0 && x.m.type === 'hub-nodes' && x.m.ready.includes('n1'), 'hub-nodes to shard 0');
    await p.waitPosted((x) => x.shard === 1 && x.m.type === 'hub-nodes' && x.m.ready.includes('n1'), 'hub-nodes to shard 1');
    const got: unknown[] = [];
    p.hubs.shardReady((m) => got.push(m) > 0);
    expect(got).toEqual([{ type: 'hub-nodes', listener: 'hub', ready: ['n1'] }]);
    await node.waitFor((f) => f.type === 'hello');
    expect(node.received[0]!.frame).toEqual({ type: 'hello', gateId: 'gw-test' });
  });

  test('send: to the node when ready, else node_unavailable back to the client (counted)', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    const frame = JSON.stringify({ type: 'client-message', clientId: '1.aaaaaaaaaaaaaaaa', userId: 'u1', data: { hi: 1 } });
    p.from(1, { type: 'hub-send', node: 'n1', clientId: '1.aaaaaaaaaaaaaaaa', frame });
    const got = await node.waitFor((f) => f.type === 'client-message');
    expect(got).toEqual({ type: 'client-message', clientId: '1.aaaaaaaaaaaaaaaa', userId: 'u1', data: { hi: 1 } });
    p.from(1, { type: 'hub-send', node: 'nope', clientId: '1.aaaaaaaaaaaaaaaa', frame });
    expect(p.replies()).toEqual([{ shard: 1, clientId: '1.aaaaaaaaaaaaaaaa', frame: { type: 'error', code: 'node_unavailable' } }]);
    expect(p.hubs.dropped()).toEqual({ node_unavailable: 1 });
  });

  test('request: response routed to the client by its own id; a node error comes back as node_error with the error object', async () => {
    await using node = await HubNode.start({ answer: (r) => ((r.data as { fail?: boolean }).fail ? { error: { code: 'E_NOPE', message: 'no' } } : { data: { echo: r.data } }) });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    p.from(1, { type: 'hub-request', node: 'n1', clientId: '1.c1', reqId: 'r1', gid: 'g-1', frame: requestFrame('g-1', '1.c1', { q: 1 }) });
    expect(p.control().requests!.sizes().pending).toBe(1);
    await until(() => p.replies().length === 1, 5_000, 'response');
    expect(p.replies()).toEqual([{ shard: 1, clientId: '1.c1', frame: { type: 'response', id: 'r1', data: { echo: { q: 1 } } } }]);
    expect(node.frames('request')).toEqual([{ type: 'request', id: 'g-1', clientId: '1.c1', userId: 'u1', data: { q: 1 } }]);
    p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c2', reqId: 'r2', gid: 'g-2', frame: requestFrame('g-2', '0.c2', { fail: true }) });
    await until(() => p.replies().length === 2, 5_000, 'error response');
    expect(p.replies()[1]).toEqual({ shard: 0, clientId: '0.c2', frame: { type: 'error', id: 'r2', code: 'node_error', error: { code: 'E_NOPE', message: 'no' } } });
    // A request to a node that is not ready is answered at once.
    p.from(0, { type: 'hub-request', node: 'n9', clientId: '0.c2', reqId: 'r3', gid: 'g-3', frame: requestFrame('g-3', '0.c2', 1) });
    expect(p.replies()[2]).toEqual({ shard: 0, clientId: '0.c2', frame: { type: 'error', id: 'r3', code: 'node_unavailable' } });
    p.expectEmpty();
  });

  test('request timeout: error timeout, no pending entry left, a late response is dropped', async () => {
    await using node = await HubNode.start({ answer: () => ({ data: 'late', delayMs: 250 }) });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'requestTimeout: 60ms' }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c1', reqId: 'r1', gid: 'g-1', frame: requestFrame('g-1', '0.c1', 1) });
    await until(() => p.replies().length === 1, 5_000, 'timeout');
    expect(p.replies()[0]!.frame).toEqual({ type: 'error', id: 'r1', code: 'timeout' });
    p.expectEmpty();
    await until(() => p.hubs.dropped().late_response === 1, 5_000, 'late response dropped');
    expect(p.replies()).toHaveLength(1);
    p.expectEmpty();
  });

  test('client down: its pending requests are removed; no answer is sent for them', async () => {
    await using node = await HubNode.start({ answer: () => ({ data: 'x', delayMs: 100 }) });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.c1', userId: 'u1' });
    p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c1', reqId: 'r1', gid: 'g-1', frame: requestFrame('g-1', '0.c1', 1) });
    p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c1', reqId: 'r2', gid: 'g-2', frame: requestFrame('g-2', '0.c1', 2) });
    expect(p.control().requests!.sizes()).toEqual({ pending: 2, byClient: 1, byNode: 1, acks: 0 });
    p.from(0, { type: 'hub-client-down', clientId: '0.c1', userId: 'u1' });
    expect(p.control().requests!.sizes()).toEqual({ pending: 0, byClient: 0, byNode: 0, acks: 0 });
    await until(() => p.hubs.dropped().late_response === 2, 5_000, 'answers after the client left are dropped');
    expect(p.replies()).toEqual([]);
  });

  test('node down: pending requests fail at once with node_unavailable, shards get hub-node-down and hub-nodes; after the restart messages flow again', async () => {
    await using node = await HubNode.start({ answer: () => undefined });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'requestTimeout: 30s' }));
    await p.nodeReady('n1');
    for (let i = 0; i < 3; i++) p.from(i % 2, { type: 'hub-request', node: 'n1', clientId: `${i % 2}.c${i}`, reqId: `r${i}`, gid: `g-${i}`, frame: requestFrame(`g-${i}`, `${i % 2}.c${i}`, i) });
    await until(() => node.frames('request').length === 3, 5_000, 'requests at the node');
    const mark = p.posted.length;
    await node.stop();
    await until(() => p.replies(mark).length === 3, 5_000, 'requests failed');
    expect(p.replies(mark).map((r) => r.frame.code)).toEqual(['node_unavailable', 'node_unavailable', 'node_unavailable']);
    expect(p.replies(mark).map((r) => [r.shard, r.clientId, r.frame.id]).sort()).toEqual([
      [0, '0.c0', 'r0'],
      [0, '0.c2', 'r2'],
      [1, '1.c1', 'r1'],
    ]);
    for (const shard of [0, 1]) {
      expect(p.find((x) => x.shard === shard && x.m.type === 'hub-node-down', mark).map((x) => x.m)).toEqual([{ type: 'hub-node-down', listener: 'hub', node: 'n1' }]);
      expect(p.find((x) => x.shard === shard && x.m.type === 'hub-nodes', mark).map((x) => x.m)).toEqual([{ type: 'hub-nodes', listener: 'hub', ready: [] }]);
    }
    p.expectEmpty();
    // A send while it is down is refused, and flows again once it is back.
    p.from(0, { type: 'hub-send', node: 'n1', clientId: '0.c0', frame: '{"type":"client-message","clientId":"0.c0","userId":"u","data":1}' });
    expect(p.replies(mark).at(-1)!.frame).toEqual({ type: 'error', code: 'node_unavailable' });
    await node.restart();
    await p.nodeReady('n1');
    await p.waitPosted((x) => x.m.type === 'hub-nodes' && x.m.ready.includes('n1'), 'hub-nodes [n1]', mark);
    p.from(0, { type: 'hub-send', node: 'n1', clientId: '0.c0', frame: '{"type":"client-message","clientId":"0.c0","userId":"u","data":2}' });
    await node.waitFor((f, conn) => f.type === 'client-message' && conn === 2);
  });

  test('push to a user goes only to the shards holding its clients; to a client, to its shard; broadcast to every shard', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }), { shards: [0, 1, 2] });
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(2, { type: 'hub-client-up', clientId: '2.b', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.c', userId: 'u2' });
    const mark = p.posted.length;
    node.push({ userId: 'u1', data: { m: 1 } });
    await until(() => p.find((x) => x.m.type === 'hub-deliver', mark).length === 2, 5_000, 'user deliveries');
    const user = p.find((x) => x.m.type === 'hub-deliver', mark);
    expect(user.map((x) => x.shard).sort()).toEqual([0, 2]);
    for (const x of user) {
      expect(x.m).toEqual({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId: 'u1' }, frame: JSON.stringify({ type: 'message', from: 'n1', data: { m: 1 } }) });
    }
    const mark2 = p.posted.length;
    node.push({ clientId: '1.c', data: 'c' });
    const client = await p.waitPosted((x) => x.m.type === 'hub-deliver', 'client delivery', mark2);
    expect(client).toEqual({ shard: 1, m: { type: 'hub-deliver', listener: 'hub', to: { kind: 'client', clientId: '1.c' }, frame: '{"type":"message","from":"n1","data":"c"}' } });
    const mark3 = p.posted.length;
    node.broadcast({ all: true });
    await until(() => p.find((x) => x.m.type === 'hub-deliver', mark3).length === 3, 5_000, 'broadcast');
    expect(p.find((x) => x.m.type === 'hub-deliver', mark3).map((x) => [x.shard, (x.m as { to: unknown }).to])).toEqual([
      [0, { kind: 'all' }],
      [1, { kind: 'all' }],
      [2, { kind: 'all' }],
    ]);
    // Nobody there: dropped as no_client.
    const mark4 = p.posted.length;
    node.push({ userId: 'ghost', data: 1 });
    node.push({ clientId: '0.nobody', data: 1 });
    await until(() => p.hubs.dropped().no_client === 2, 5_000, 'no_client drops');
    expect(p.find((x) => x.m.type === 'hub-deliver', mark4)).toEqual([]);
    for (const [shard, clientId, userId] of [[0, '0.a', 'u1'], [2, '2.b', 'u1'], [1, '1.c', 'u2']] as const) p.from(shard, { type: 'hub-client-down', clientId, userId });
    await p.settledEmpty();
  });

  test('ack extension: a push with an id is acked with the sum the targeted shards delivered; a shard that goes down counts 0', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.c', userId: 'u1' });
    let mark = p.posted.length;
    node.push({ userId: 'u1', data: 'x', id: 'p-1' });
    await until(() => p.find((x) => x.m.type === 'hub-deliver', mark).length === 2, 5_000, 'deliveries');
    const acks = p.find((x) => x.m.type === 'hub-deliver', mark).map((x) => (x.m as { ack?: number }).ack);
    expect(acks[0]).toBeGreaterThan(0);
    expect(acks[1]).toBe(acks[0]);
    expect(p.control().requests!.sizes().acks).toBe(1);
    p.from(0, { type: 'hub-delivered', ack: acks[0]!, delivered: 1 });
    expect(node.frames('ack')).toEqual([]);
    p.from(1, { type: 'hub-delivered', ack: acks[0]!, delivered: 2 });
    expect(await node.waitFor((f) => f.type === 'ack')).toEqual({ type: 'ack', id: 'p-1', delivered: 3 });

    // Broadcast with an id; shard 1 goes down before answering.
    mark = p.posted.length;
    node.broadcast('all', 7);
    await until(() => p.find((x) => x.m.type === 'hub-deliver', mark).length === 2, 5_000, 'broadcast');
    const ack = (p.find((x) => x.m.type === 'hub-deliver', mark)[0]!.m as { ack: number }).ack;
    p.from(0, { type: 'hub-delivered', ack, delivered: 1 });
    p.setRunning([0]);
    p.hubs.shardDown(1);
    expect(await node.waitFor((f) => f.type === 'ack' && f.id === 7)).toEqual({ type: 'ack', id: 7, delivered: 1 });

    // No client at all: acked at once with 0.
    node.push({ clientId: '1.gone', data: 1, id: 'p-2' });
    expect(await node.waitFor((f) => f.type === 'ack' && f.id === 'p-2')).toEqual({ type: 'ack', id: 'p-2', delivered: 0 });
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    await p.settledEmpty();
  });

  test('bad node frames are dropped and counted; the stream stays', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    // The last one parses but is too deeply nested to serialise again (a RangeError): it must not
    // take the gateway down.
    const deep = `{"type":"broadcast","data":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const bad = ['not json', '[1,2]', '{"type":"nope"}', '{"data":1}', '{"type":"push","data":1}', '{"type":"push","userId":"u","clientId":"0.a","data":1}', '{"type":"push","userId":"u"}', '{"type":"broadcast"}', '{"type":"response","data":1}', '{"type":"response","id":"g"}', '{"type":"push","userId":"u","data":1,"id":{}}', deep];
    for (const b of bad) node.send(b);
    for (const ws of node.sockets) ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await until(() => p.hubs.dropped().bad_node_frame === bad.length + 1, 5_000, 'bad frames counted');
    expect(p.control().stream('n1')!.state).toBe('ready');
    expect(node.accepted).toBe(1);
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u' });
    const mark = p.posted.length;
    node.push({ userId: 'u', data: 'still here' });
    await p.waitPosted((x) => x.m.type === 'hub-deliver', 'a good push after the bad ones', mark);
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u' });
    await p.settledEmpty();
    expect(typeof parseNodeFrame('{"type":"broadcast","data":null}')).toBe('object');
  });
  test('a client with MAX_PENDING_PER_CLIENT requests unanswered gets rate_limited for the next; a send refused by the main thread keeps its id; a removed listener\'s messages are answered', async () => {
    await using node = await HubNode.start({ answer: () => undefined });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'requestTimeout: 30s' }));
    await p.nodeReady('n1');
    for (let k = 0; k <= MAX_PENDING_PER_CLIENT; k++) p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c', reqId: `r${k}`, gid: `g-${k}`, frame: requestFrame(`g-${k}`, '0.c', k) });
    expect(p.replies()).toEqual([{ shard: 0, clientId: '0.c', frame: { type: 'error', id: `r${MAX_PENDING_PER_CLIENT}`, code: 'rate_limited' } }]);
    expect(p.control().sizes()['requests.pending']).toBe(MAX_PENDING_PER_CLIENT);
    // A send to a node the main thread does not have: the error carries the send's id.
    let mark = p.posted.length;
    p.from(0, { type: 'hub-send', node: 'n9', clientId: '0.c', frame: '{}', id: 's1' });
    expect(p.replies(mark)).toEqual([{ shard: 0, clientId: '0.c', frame: { type: 'error', id: 's1', code: 'node_unavailable' } }]);
    // A listener the main thread no longer has (removed by a reload the shard has not seen yet).
    mark = p.posted.length;
    p.hubs.fromShard(1, { type: 'hub-request', listener: 'gone', node: 'n1', clientId: '1.x', reqId: 'rq', gid: 'g-x', frame: '{}' });
    expect(p.replies(mark)).toEqual([{ shard: 1, clientId: '1.x', frame: { type: 'error', id: 'rq', code: 'node_unavailable' } }]);
    p.from(0, { type: 'hub-client-down', clientId: '0.c', userId: 'u1' });
    await p.settledEmpty();
  });
  test('a node too far behind to take a presence frame gets a new session (hello and the presence snapshot) instead of a silently wrong view', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1');
    // The node stops reading; client messages pile up toward it until its queue is full.
    for (const ws of node.sockets) (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = JSON.stringify({ type: 'client-message', clientId: '0.a', userId: 'u1', data: 'x'.repeat(1024 * 1024) });
    let mark = p.posted.length;
    for (let k = 0; k < 40 && p.replies(mark).length === 0; k++) {
      p.from(0, { type: 'hub-send', node: 'n1', clientId: '0.a', frame: big });
      await new Promise((r) => setImmediate(r));
    }
    expect(p.replies(mark).map((r) => r.frame.code)).toContain('node_unavailable');
    // A presence change cannot be queued either: the stream is restarted, and the new session
    // starts with hello and the users online now.
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u2' });
    await until(() => node.accepted === 2, 10_000, 'a new stream');
    await node.waitFor((f, conn) => conn === 2 && f.type === 'hello');
    await node.waitFor((f, conn) => conn === 2 && f.type === 'presence' && f.userId === 'u2' && f.online === true);
    await node.waitFor((f, conn) => conn === 2 && f.type === 'presence' && f.userId === 'u1' && f.online === true);
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-down', clientId: '1.b', userId: 'u2' });
    await p.settledEmpty();
  });
  test('node pacing: a shard far behind makes the node stream stop reading until every shard has caught up; nothing is lost', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    const deliveries = (from: number) => p.find((x) => x.m.type === 'hub-deliver', from).length;
    const mark = p.posted.length;
    // Shard 1 is behind: the next broadcast is still handed over, then the stream stops reading.
    p.setBacklog(1, DELIVER_BACKLOG_HIGH + 1);
    node.broadcast('first');
    await until(() => deliveries(mark) === 2, 5_000, 'the first broadcast to both shards');
    const stream = p.control().stream('n1')!;
    expect(stream.paused).toBe(true);
    for (let k = 0; k < 20; k++) node.broadcast(`held ${k}`);
    // The node's frames wait in the sockets (held back, not dropped and not queued toward shards).
    expect(deliveries(mark)).toBe(2);
    // The shard catches up: the stream reads again and every frame arrives, in order.
    p.setBacklog(1, 0);
    await until(() => deliveries(mark) === 42, 5_000, 'the held broadcasts delivered');
    expect(stream.paused).toBe(false);
    const frames = p.find((x) => x.m.type === 'hub-deliver' && x.shard === 0, mark).map((x) => JSON.parse((x.m as { frame: string }).frame).data);
    expect(frames).toEqual(['first', ...Array.from({ length: 20 }, (_, k) => `held ${k}`)]);
    await p.settledEmpty();
  });

  test('the request table stops through its machine: running, then stopping while it answers every pending request node_unavailable, then stopped', async () => {
    /** Each state change of requests:hub, with how many client replies had been posted at that moment. */
    const changes: [string, number][] = [];
    await using node = await HubNode.start({ answer: () => undefined });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    setActorEventsEnabled(true);
    const sub = actorEvents$.subscribe((e) => {
      if (e.type === 'state' && e.id === 'requests:hub') changes.push([e.state, p.replies().length]);
    });
    onTestFinished(() => {
      sub.unsubscribe();
      setActorEventsEnabled(false);
    });
    await p.nodeReady('n1');
    const table = p.control().requests!;
    expect(table.state).toBe('running');
    for (const gid of ['g-1', 'g-2']) p.from(0, { type: 'hub-request', node: 'n1', clientId: '0.c1', reqId: `r-${gid}`, gid, frame: requestFrame(gid, '0.c1', gid) });
    expect(table.sizes().pending).toBe(2);
    // Stopped as its supervisor stops a child (the node stream stays up: the answers are the table's own).
    await table.shutdown(1_000);
    expect(changes.slice(0, 2)).toEqual([
      ['stopping', 0],
      ['stopped', 2],
    ]);
    expect(p.replies().map((r) => r.frame)).toEqual([
      { type: 'error', id: 'r-g-1', code: 'node_unavailable' },
      { type: 'error', id: 'r-g-2', code: 'node_unavailable' },
    ]);
    expect(table.state).toBe('stopped');
    expect(table.sizes()).toEqual({ pending: 0, byClient: 0, byNode: 0, acks: 0 });
    // hub:hub restarts it (permanent): a new table, from its machine's initial state to running.
    await until(() => p.control().requests !== table && p.control().requests?.state === 'running', 5_000, 'request table restarted');
    expect(changes.slice(2)).toEqual([['running', 2]]);
  });
});
