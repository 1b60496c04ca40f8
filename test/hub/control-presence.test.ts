import { describe, expect, onTestFinished, test } from 'vitest';
import { HubNode } from '../helpers/hub-node.ts';
import { until } from '../helpers/daemon.ts';
import { actorEvents$, setActorEventsEnabled } from '../../src/runtime/events.ts';
import { compile, type CompiledMachine } from '../../src/runtime/compiled-machine.ts';
import { presenceMachine } from '../../src/actors/presence.ts';
import { requestTableMachine } from '../../src/actors/hub-requests.ts';
import type { TreeNode } from '../../src/runtime/actor.ts';
import { hubListeners, startHubPlane } from './control-fixture.ts';

/** The presence and client-gone frames a node got, as short strings, in order. */
function story(node: HubNode): string[] {
  return node.received.flatMap(({ frame: f }) =>
    f.type === 'presence' ? [`${f.userId} ${f.online ? 'online' : 'offline'}`] : f.type === 'client-gone' ? [`gone ${f.clientId} ${f.userId}`] : [],
  );
}

describe('hub control plane: presence across shards', () => {
  test('online at the first client, client-gone for each, offline only after the grace; every node hears it', async () => {
    await using a = await HubNode.start();
    await using b = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', a.url], ['n2', b.url]], extra: 'presenceGrace: 80ms' }));
    await p.nodeReady('n1');
    await p.nodeReady('n2');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(0, { type: 'hub-client-up', clientId: '0.b', userId: 'u1' });
    const presence = p.control().presence!;
    expect(presence.sizes()).toEqual({ clients: 2, users: 1, inGrace: 0, shards: 1 });
    expect(p.hubs.stats()).toEqual({ clients: [{ listener: 'hub', clients: 2 }], usersOnline: 1 });
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    p.from(0, { type: 'hub-client-down', clientId: '0.b', userId: 'u1' });
    // Still online during the grace.
    expect(p.hubs.stats().usersOnline).toBe(1);
    expect(presence.sizes()).toEqual({ clients: 0, users: 1, inGrace: 1, shards: 0 });
    await until(() => p.hubs.stats().usersOnline === 0, 5_000, 'offline after the grace');
    for (const node of [a, b]) {
      await node.waitFor((f) => f.type === 'presence' && f.online === false);
      expect(story(node)).toEqual(['u1 online', 'gone 0.a u1', 'gone 0.b u1', 'u1 offline']);
    }
    p.expectEmpty();
  });

  test('a new client within the grace: no offline/online flap', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 150ms' }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    // The page reloads: its new client lands on another shard, within the grace.
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u1' });
    expect(p.control().presence!.sizes()).toEqual({ clients: 1, users: 1, inGrace: 0, shards: 1 });
    // Long past the grace: still online, and the grace timer was cancelled (the leak check would see it).
    await node.waitFor((f) => f.type === 'client-gone');
    const t0 = performance.now();
    await until(() => performance.now() - t0 > 300, 5_000, 'past the grace');
    expect(story(node)).toEqual(['u1 online', 'gone 0.a u1']);
    expect(p.hubs.stats().usersOnline).toBe(1);
    p.from(1, { type: 'hub-client-down', clientId: '1.b', userId: 'u1' });
    await node.waitFor((f) => f.type === 'presence' && f.online === false);
    expect(story(node)).toEqual(['u1 online', 'gone 0.a u1', 'gone 1.b u1', 'u1 offline']);
    await p.settledEmpty();
  });

  test('a user with a client on each shard stays online until both are gone', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 0ms' }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u1' });
    expect([...p.control().presence!.shardsOfUser('u1')].sort()).toEqual([0, 1]);
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    expect(p.control().presence!.isOnline('u1')).toBe(true);
    expect([...p.control().presence!.shardsOfUser('u1')]).toEqual([1]);
    p.from(1, { type: 'hub-client-down', clientId: '1.b', userId: 'u1' });
    expect(p.control().presence!.isOnline('u1')).toBe(false);
    await node.waitFor((f) => f.type === 'presence' && f.online === false);
    expect(story(node)).toEqual(['u1 online', 'gone 0.a u1', 'gone 1.b u1', 'u1 offline']);
    p.expectEmpty();
  });

  test('a shard that goes down takes all its clients at once: client-gone for each, then presence; its pending requests go too', async () => {
    await using node = await HubNode.start({ answer: () => undefined });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 50ms' }));
    await p.nodeReady('n1');
    p.from(1, { type: 'hub-client-up', clientId: '1.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.c', userId: 'u2' });
    p.from(0, { type: 'hub-client-up', clientId: '0.d', userId: 'u2' });
    p.from(1, { type: 'hub-request', node: 'n1', clientId: '1.a', reqId: 'r1', gid: 'g1', frame: '{"type":"request","id":"g1","clientId":"1.a","userId":"u1","data":1}' });
    expect(p.control().requests!.pending).toBe(1);
    const mark = p.posted.length;
    p.setRunning([0]);
    p.hubs.shardDown(1);
    expect(p.control().presence!.sizes()).toEqual({ clients: 1, users: 2, inGrace: 1, shards: 1 });
    expect(p.control().requests!.sizes()).toEqual({ pending: 0, byClient: 0, byNode: 0, acks: 0 });
    // Nobody to answer on a dead shard.
    expect(p.replies(mark)).toEqual([]);
    await node.waitFor((f) => f.type === 'presence' && f.online === false);
    expect(story(node)).toEqual(['u1 online', 'u2 online', 'gone 1.a u1', 'gone 1.b u1', 'gone 1.c u2', 'u1 offline']);
    expect(p.control().presence!.isOnline('u2')).toBe(true);
    // A push to u2 now goes to shard 0 only.
    node.push({ userId: 'u2', data: 1 });
    const d = await p.waitPosted((x) => x.m.type === 'hub-deliver', 'deliver', mark);
    expect(d.shard).toBe(0);
    p.from(0, { type: 'hub-client-down', clientId: '0.d', userId: 'u2' });
    await p.settledEmpty();
  });

  test('a node that (re)connects learns who is online now', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]] }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u2' });
    await until(() => story(node).length === 2, 5_000, 'presence');
    await node.stop();
    await until(() => p.control().readyNodes().length === 0, 5_000, 'down');
    await node.restart();
    await p.nodeReady('n1');
    await until(() => node.received.filter((r) => r.conn === 2 && r.frame.type === 'presence').length === 2, 5_000, 'snapshot');
    expect(node.received.filter((r) => r.conn === 2).map((r) => r.frame)).toEqual([
      { type: 'hello', gateId: 'gw-test' },
      { type: 'presence', userId: 'u1', online: true },
      { type: 'presence', userId: 'u2', online: true },
    ]);
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-down', clientId: '1.b', userId: 'u2' });
    await p.settledEmpty();
  });

  test('churn: 2,000 clients of 200 users on 2 shards come and go through every exit; every map is back to zero', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 20ms\n    requestTimeout: 50ms' }));
    await p.nodeReady('n1');
    const live: { shard: number; clientId: string; userId: string }[] = [];
    for (let i = 0; i < 2_000; i++) {
      const shard = i % 2;
      const c = { shard, clientId: `${shard}.c${i}`, userId: `u${i % 200}` };
      p.from(shard, { type: 'hub-client-up', ...c });
      live.push(c);
      if (i % 3 === 0) p.from(shard, { type: 'hub-request', node: 'n1', clientId: c.clientId, reqId: `r${i}`, gid: `g${i}`, frame: JSON.stringify({ type: 'request', id: `g${i}`, clientId: c.clientId, userId: c.userId, data: i }) });
      if (i % 5 === 0) {
        const gone = live.splice(Math.floor(live.length / 2), 1)[0]!;
        p.from(gone.shard, { type: 'hub-client-down', clientId: gone.clientId, userId: gone.userId });
      }
    }
    expect(p.control().presence!.sizes().clients).toBe(live.length);
    // Shard 1 dies with its clients; the others leave one by one.
    p.setRunning([0]);
    p.hubs.shardDown(1);
    for (const c of live) if (c.shard === 0) p.from(0, { type: 'hub-client-down', clientId: c.clientId, userId: c.userId });
    await p.settledEmpty();
    expect(p.hubs.stats()).toEqual({ clients: [{ listener: 'hub', clients: 0 }], usersOnline: 0 });
    await node.waitFor((f) => f.type === 'presence' && f.online === false && f.userId === 'u199');
  });
  test('a presence that crashes is restarted and the shards re-announce their clients: users stay online, no offline reaches the nodes', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 30ms' }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u2' });
    const before = p.control().presence!;
    const mark = p.posted.length;
    before.crash(new Error('injected'));
    await until(() => p.control().presence && p.control().presence !== before, 5_000, 'presence restarted');
    // Every running shard is asked to announce its clients again...
    for (const shard of [0, 1]) await p.waitPosted((x) => x.shard === shard && x.m.type === 'hub-resync', `hub-resync to shard ${shard}`, mark);
    // ...and does (as HubListenerActor.resync would): presence is whole again.
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-up', clientId: '1.b', userId: 'u2' });
    expect(p.control().presence!.sizes()).toEqual({ clients: 2, users: 2, inGrace: 0, shards: 2 });
    expect(p.hubs.stats().usersOnline).toBe(2);
    expect(story(node).filter((s) => s.endsWith('offline'))).toEqual([]);
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    p.from(1, { type: 'hub-client-down', clientId: '1.b', userId: 'u2' });
    await p.settledEmpty();
  });
  test('a presence restart while a user is in its grace: the nodes still hear it go offline, and re-announced users are not announced twice', async () => {
    await using node = await HubNode.start();
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 200ms' }));
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
    p.from(0, { type: 'hub-client-up', clientId: '0.b', userId: 'u2' });
    p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
    await node.waitFor((f) => f.type === 'client-gone' && f.clientId === '0.a');
    const before = p.control().presence!;
    expect(before.sizes().inGrace).toBe(1);
    before.crash(new Error('injected'));
    await until(() => p.control().presence && p.control().presence !== before, 5_000, 'presence restarted');
    // Shard 0 re-announces the client it still has; u1's last client left before the crash.
    p.from(0, { type: 'hub-client-up', clientId: '0.b', userId: 'u2' });
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === false, 5_000);
    expect(story(node)).toEqual(['u1 online', 'u2 online', 'gone 0.a u1', 'u1 offline']);
    p.from(0, { type: 'hub-client-down', clientId: '0.b', userId: 'u2' });
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u2' && f.online === false, 5_000);
    await p.settledEmpty();
  });

  test('presence and the request table show the states of their machines in the tree (settling after a restart), and every change, their stop included, is a transition of their machine', async () => {
    const machines: Record<string, CompiledMachine> = { 'presence:hub': compile(presenceMachine), 'requests:hub': compile(requestTableMachine) };
    const changes: Record<string, string[]> = { 'presence:hub': [], 'requests:hub': [] };
    setActorEventsEnabled(true);
    const sub = actorEvents$.subscribe((e) => {
      if (e.type === 'state' && e.id in changes) changes[e.id]!.push(e.state);
    });
    onTestFinished(() => {
      sub.unsubscribe();
      setActorEventsEnabled(false);
    });
    await using node = await HubNode.start();
    const p = await startHubPlane(hubListeners({ nodes: [['n1', node.url]], extra: 'presenceGrace: 0ms' }));
    const inTree = (): Record<string, string> => {
      const out: Record<string, string> = {};
      const walk = (n: TreeNode): void => {
        if (n.id in machines) out[n.id] = n.state;
        n.children.forEach(walk);
      };
      walk(p.root.tree());
      return out;
    };
    try {
      await p.nodeReady('n1');
      expect(inTree()).toEqual({ 'presence:hub': 'running', 'requests:hub': 'running' });
      p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
      const before = p.control().presence!;
      before.crash(new Error('injected'));
      // The crash went through the machine: the old actor is stopped, and the new one, which has
      // users to settle (u1 was announced online), settles until the shards re-announced theirs.
      expect(before.state).toBe('stopped');
      await until(() => inTree()['presence:hub'] === 'settling', 5_000, 'the restarted presence settles');
      p.from(0, { type: 'hub-client-up', clientId: '0.a', userId: 'u1' });
      await until(() => inTree()['presence:hub'] === 'running', 5_000, 'settled');
      p.from(0, { type: 'hub-client-down', clientId: '0.a', userId: 'u1' });
      await node.waitFor((f) => f.type === 'presence' && f.online === false);
    } finally {
      await p[Symbol.asyncDispose]();
    }
    expect(changes).toEqual({
      'presence:hub': ['running', 'stopping', 'stopped', 'settling', 'running', 'stopping', 'stopped'],
      'requests:hub': ['running', 'stopping', 'stopped'],
    });
    // Each change is an edge of the machine, from its initial state again after each stop.
    for (const [id, states] of Object.entries(changes)) {
      const m = machines[id]!;
      let at = m.initial;
      for (const next of states) {
        expect(m.events.some((ev) => m.next(at, ev) === next), `${id}: ${at} -> ${next}`).toBe(true);
        at = m.final.has(next) ? m.initial : next;
      }
    }
  });
});
