/**
 * The hub's cluster scripts against a real Redis (a private redis-server): presence changes are
 * ordered by their sequence numbers and mirrored exactly, also across a missed message, a reset
 * and a `gone`; the per-user cap counts every instance's hash and forgets an expired one; the
 * history keeps the last `size` pushes of an epoch.
 */
import { Redis } from 'ioredis';
import { describe, expect, test } from 'vitest';
import { until } from '../helpers/daemon.ts';
import { RedisServer } from '../helpers/redis.ts';
import { hubPipeline } from '../../src/cluster/hub-scripts.ts';
import { decodeHubWire, encodeDeliver, hubKeys } from '../../src/cluster/hub-wire.ts';
import { RemotePresence } from '../../src/cluster/hub-presence.ts';

async function exec(r: Redis, build: (p: ReturnType<typeof hubPipeline>) => unknown): Promise<unknown[]> {
  const p = hubPipeline(r);
  build(p);
  const res = (await p.exec())!;
  for (const [err] of res) if (err) throw err;
  return res.map(([, v]) => v);
}

describe('hub cluster scripts', () => {
  test('presence: ordered changes mirrored, a missed message read again whole, reset and gone', async () => {
    await using redis = await RedisServer.start();
    // No reconnect, and closed before the server stops (disposed in reverse order): no timer left.
    const r = new Redis(redis.url, { retryStrategy: () => null });
    const sub = new Redis(redis.url, { retryStrategy: () => null });
    using _clients = { [Symbol.dispose]: () => (r.disconnect(), sub.disconnect()) };
    const k = hubKeys('t:', 'hub');
    const changed: string[] = [];
    const mirror = new RemotePresence({
      fetch: async (i) => {
        const [users, seq] = (await r.multi().smembers(k.presence(i)).get(k.seq(i)).exec())!.map(([, v]) => v) as [string[], string | null];
        return { users, seq: Number(seq ?? 0) };
      },
      changed: (u) => changed.push(u),
    });
    // Every message is seen; `skip` drops the next one (a missed message).
    let skip = 0;
    const seen: string[] = [];
    sub.on('smessage', (_ch: string, text: string) => {
      seen.push(text);
      const m = decodeHubWire(text);
      if (skip > 0 && skip--) return;
      if (m?.kind === 'presence') mirror.message(m.instance, m.seq, m.op, m.userId);
    });
    await sub.ssubscribe(k.channel);
    const op = (o: 'on' | 'off', u: string) => exec(r, (p) => p.hubPresenceOp(k.presence('x'), k.seq('x'), o, u, 60_000, 'SPUBLISH', k.channel, 'x'));

    await op('on', 'u1');
    await op('on', 'u2');
    await until(() => mirror.has('u1') && mirror.has('u2'), 5_000, 'u1 and u2 mirrored');
    expect(seen[0]).toBe('p\nx\n1\non\nu1');
    skip = 1;
    await op('off', 'u1'); // missed
    await op('on', 'u3'); // a gap: x is read again whole
    await until(() => !mirror.has('u1') && mirror.has('u3'), 5_000, 'read again after the gap');
    expect([...mirror.users()].sort()).toEqual(['u2', 'u3']);

    await exec(r, (p) => p.hubPresenceReset(k.presence('x'), k.seq('x'), 60_000, 'SPUBLISH', k.channel, 'x', ['u9']));
    await until(() => mirror.has('u9') && !mirror.has('u2'), 5_000, 'reset read');
    await exec(r, (p) => p.hubPresenceGone(k.presence('x'), k.seq('x'), 'SPUBLISH', k.channel, 'x'));
    await until(() => mirror.sizes().instances === 0, 5_000, 'gone');
    expect(mirror.sizes()).toEqual({ instances: 0, users: 0 });
    expect(await r.exists(k.presence('x'), k.seq('x'))).toBe(0);
    // Each user's presence changed as often as it came and went.
    expect(changed.filter((u) => u === 'u1')).toEqual(['u1', 'u1']);
    // A delivery message decodes with its frame intact (newlines in it included).
    expect(decodeHubWire(encodeDeliver('x', { kind: 'user', userId: 'u\n1' }, '{"a":"b\\nc"}'))).toEqual({ kind: 'deliver', instance: 'x', to: { kind: 'user', userId: 'u\n1' }, frame: '{"a":"b\\nc"}' });
    expect(decodeHubWire('p\nx\nnot-a-number\non\nu')).toBeUndefined();
  });

  test('caps: the sum over every instance\'s hash, a count given back, an expired hash forgotten; history: last `size` of an epoch', async () => {
    await using redis = await RedisServer.start();
    const r = new Redis(redis.url, { retryStrategy: () => null });
    using _client = { [Symbol.dispose]: () => r.disconnect() };
    const k = hubKeys('t:', 'hub');
    const admit = async (self: string, other: string, ttl = 60_000) =>
      (await new Promise<unknown>((resolve, reject) => {
        const p = hubPipeline(r);
        p.hubCapsAdmit(2, [k.caps(self), k.caps(other), 'u1', 2, ttl], (err, v) => (err ? reject(err) : resolve(v)));
        void p.exec();
      })) === 1;
    expect(await admit('a', 'b')).toBe(true);
    expect(await admit('b', 'a', 300)).toBe(true);
    expect(await admit('a', 'b')).toBe(false);
    await exec(r, (p) => p.hubCapsAdd(k.caps('a'), 'u1', -1, 60_000));
    expect(await r.hget(k.caps('a'), 'u1')).toBeNull();
    expect(await admit('a', 'b')).toBe(true);
    expect(await admit('a', 'b')).toBe(false);
    // b's hash expires (its instance died): its share is forgotten.
    await until(async () => (await r.exists(k.caps('b'))) === 0, 5_000, 'b expired');
    expect(await admit('a', 'b')).toBe(true);
    expect(await admit('a', 'b')).toBe(false); // a holds both places itself now
    await exec(r, (p) => p.hubCapsReset(k.caps('a'), 60_000, ['u1', 1, 'u2', 3]));
    expect(await r.hgetall(k.caps('a'))).toEqual({ u1: '1', u2: '3' });

    const append = async (data: string) =>
      new Promise<string>((resolve, reject) => {
        const p = hubPipeline(r);
        p.hubHistoryAppend(k.history('u1'), k.historyMeta('u1'), `{"type":"message","data":"${data}"`, 3, 60_000, 'E1', (err, f) => (err ? reject(err) : resolve(f as string)));
        void p.exec();
      });
    const read = async (epoch: string, offset: number) => (await exec(r, (p) => p.hubHistoryRead(k.history('u1'), k.historyMeta('u1'), epoch, offset, () => {})))[0];
    expect(JSON.parse(await append('m1'))).toEqual({ type: 'message', data: 'm1', epoch: 'E1', offset: 1 });
    for (const d of ['m2', 'm3', 'm4']) await append(d);
    // size 3: m2..m4 are kept; from offset 1 they are all there, from 0 m1 is missing.
    expect(((await read('E1', 1)) as string[]).map((f, i) => (i === 0 ? f : JSON.parse(f).data))).toEqual(['ok', 'm2', 'm3', 'm4']);
    expect(await read('E1', 0)).toEqual(['failed']);
    expect(await read('E1', 4)).toEqual(['ok']);
    expect(await read('E1', 5)).toEqual(['failed']);
    expect(await read('E2', 1)).toEqual(['failed']);
  });
});
