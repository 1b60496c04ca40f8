import pino from 'pino';
import { expect } from 'vitest';
import { Supervisor } from '../../src/supervisors/supervisor.ts';
import { Hubs } from '../../src/daemon/hubs.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { ListenerConfig } from '../../src/config/types.ts';
import type { HubFromShard, HubToShard } from '../../src/hub/messages.ts';
import type { HubControl } from '../../src/hub/hub-control.ts';
import { until } from '../helpers/daemon.ts';

export const log = pino({ level: 'silent' });

/** Hub listeners parsed from YAML, as the daemon gets them. `nodes` is `[id, url]` pairs. */
export function hubListeners(...hubs: { name?: string; nodes: [string, string][]; extra?: string }[]): ListenerConfig[] {
  const yaml = hubs
    .map(
      (h, i) => `
  - name: ${h.name ?? 'hub'}
    protocol: hub
    listen: 127.0.0.1:${40000 + i}
    auth: { jwt: { secret: s3cret-s3cret-s3cret-s3cret-s3cret } }
    nodes: [ ${h.nodes.map(([id, url]) => `{ id: ${id}, url: "${url}" }`).join(', ')} ]
    ${h.extra ?? ''}`,
    )
    .join('');
  return parseConfig(`listeners:${yaml}`, 'test.yaml').listeners;
}

type Posted = { shard: number; m: HubToShard };
/** A shard message without its listener (`hub` unless given). */
type ShardMessage = HubFromShard extends infer T ? (T extends unknown ? Omit<T, 'listener'> & { listener?: string } : never) : never;

/**
 * The hub control plane under a root supervisor, with a fake shard side: what it posts to shards
 * is recorded, and shard messages are fed to `fromShard` as the daemon routes them.
 */
export async function startHubPlane(listeners: ListenerConfig[], o: { shards?: number[] } = {}) {
  const posted: Posted[] = [];
  let running = o.shards ?? [0, 1];
  /** What each fake shard has not processed yet (node pacing); 0 unless a test sets it. */
  const backlogs = new Map<number, number>();
  const hubs = new Hubs({
    log,
    gateId: () => 'gw-test',
    shards: {
      post: (shard, m) => {
        if (!running.includes(shard)) return false;
        posted.push({ shard, m });
        return true;
      },
      running: () => running,
      backlog: (shard) => backlogs.get(shard) ?? 0,
    },
    streamTuning: { backoffBaseMs: 10, backoffCapMs: 40 },
  });
  const root = await new Supervisor({ id: 'root', strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: [hubs.child(listeners)] }, { log }).start();
  const plane = {
    hubs,
    root,
    posted,
    control: (name = 'hub'): HubControl => hubs.control(name)!,
    /** A shard message for listener `hub` (or `m.listener`). */
    from(shard: number, m: ShardMessage): void {
      hubs.fromShard(shard, { listener: 'hub', ...m } as HubFromShard);
    },
    setRunning(shards: number[]): void {
      running = shards;
    },
    setBacklog(shard: number, n: number): void {
      backlogs.set(shard, n);
    },
    /** Messages posted so far (from index `from`) matching `pred`. */
    find(pred: (p: Posted) => boolean, from = 0): Posted[] {
      return posted.slice(from).filter(pred);
    },
    /** Waits for a posted message matching `pred` (polling with a deadline). */
    async waitPosted(pred: (p: Posted) => boolean, what = 'posted message', from = 0): Promise<Posted> {
      return (await until(() => posted.slice(from).find(pred), 5_000, what))!;
    },
    /** Client replies (`hub-reply`) posted, parsed. */
    replies(from = 0): { shard: number; clientId: string; frame: Record<string, unknown> }[] {
      return posted.slice(from).flatMap((p) => (p.m.type === 'hub-reply' ? [{ shard: p.shard, clientId: p.m.clientId, frame: JSON.parse(p.m.frame) as Record<string, unknown> }] : []));
    },
    async nodeReady(node: string, name = 'hub'): Promise<void> {
      await until(() => hubs.control(name)?.readyNodes().includes(node), 5_000, `node ${node} ready`);
    },
    /** Maps of every hub listener's control plane (streams and ready nodes aside) that are not empty. */
    nonEmpty(): Record<string, number> {
      const out: Record<string, number> = {};
      for (const c of hubs.controls()) {
        const { streams: _s, ready: _r, ...rest } = c.sizes();
        for (const [k, v] of Object.entries(rest)) if (v !== 0) out[`${c.name}.${k}`] = v;
      }
      return out;
    },
    /** Every map is empty now (pending requests, acks, clients, users, shards). */
    expectEmpty(): void {
      expect(plane.nonEmpty()).toEqual({});
    },
    /** Every map empties within the deadline (users in their presence grace leave when it passes). */
    async settledEmpty(): Promise<void> {
      await until(() => Object.keys(plane.nonEmpty()).length === 0, 5_000, 'every hub map empty').catch(() => {});
      expect(plane.nonEmpty()).toEqual({});
    },
    /** Every test ends with every map empty (checked before the subtree stops, which would empty them anyway). */
    async [Symbol.asyncDispose](): Promise<void> {
      try {
        await plane.settledEmpty();
      } finally {
        await root.shutdown('infinity');
      }
    },
  };
  return plane;
}
