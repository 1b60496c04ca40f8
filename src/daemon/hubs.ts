import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import { clientErrorFrame } from '../actors/hub-requests.ts';
import { HubControl, type HubListenerView, type HubShards, type NodeStreamTuning } from '../hub/hub-control.ts';
import type { HubFromShard, HubToShard } from '../hub/messages.ts';
import type { HubListenerConfig, ListenerConfig } from '../config/types.ts';
import type { ClusterActor } from '../cluster/cluster.ts';

export interface HubsOptions {
  shards: HubShards;
  /** `hello`'s gateId: `cluster.instanceId`, or the host name. */
  gateId: () => string;
  log: Logger;
  streamTuning?: NodeStreamTuning;
  /**
   * Cluster mode (`cluster` set): the cluster actor while it runs. Each hub listener then links
   * the instances through Redis (delivery, presence, the per-user cap: see docs/cluster.md).
   */
  cluster?: () => ClusterActor | undefined;
}

function hubListeners(ls: readonly ListenerConfig[]): HubListenerConfig[] {
  return ls.filter((l): l is HubListenerConfig => l.protocol === 'hub');
}

/**
 * The hub's control plane (main thread): `hubs` (one_for_one) under root holds a `hub:LISTENER`
 * supervisor per hub listener (see {@link HubControl}). The daemon routes the shards' hub
 * messages here, tells it when a shard goes down or becomes ready, and applies reloads.
 *
 * Main-side drops (`bad_node_frame`, `no_client`, `node_unavailable`, `late_response`) are counted
 * here; the shards count theirs in the state table.
 *
 * @example
 * const hubs = new Hubs({ shards, gateId: () => 'gw-1', log });
 * rootChildren.push(hubs.child(config.listeners));
 * hubs.fromShard(0, msg);
 */
export class Hubs {
  readonly #opts: HubsOptions;
  readonly #controls = new Map<string, HubControl>();
  readonly #dropped = new Map<string, number>();
  #supervisor: Supervisor | undefined;

  constructor(opts: HubsOptions) {
    this.#opts = opts;
  }

  /** The `hubs` subtree's child spec. Its children come from the hub listeners current at each (re)start. */
  child(listeners: readonly ListenerConfig[]): ChildSpec {
    for (const l of hubListeners(listeners)) this.#controls.set(l.name, this.#control(l));
    return {
      id: 'hubs',
      restart: 'permanent',
      supervisor: true,
      shutdown: 'infinity',
      start: ({ parent, log }) => {
        const sup = new Supervisor(
          { id: 'hubs', strategy: 'one_for_one', maxRestarts: 5, periodMs: 30_000, children: [...this.#controls.values()].map((c) => c.child()) },
          { parent, log },
        );
        this.#supervisor = sup;
        return sup.start();
      },
    };
  }

  #control(l: HubListenerConfig): HubControl {
    return new HubControl({ config: l, shards: this.#opts.shards, gateId: this.#opts.gateId, drop: (r) => this.drop(r), log: this.#opts.log, streamTuning: this.#opts.streamTuning, cluster: this.#opts.cluster });
  }

  /** The control plane of hub listener `name`. */
  control(name: string): HubControl | undefined {
    return this.#controls.get(name);
  }

  controls(): HubControl[] {
    return [...this.#controls.values()];
  }

  drop(reason: string): void {
    this.#dropped.set(reason, (this.#dropped.get(reason) ?? 0) + 1);
  }

  /** Drops counted in the main thread, by reason. */
  dropped(): Record<string, number> {
    return Object.fromEntries(this.#dropped);
  }

  /** A hub message from a shard; one for a listener that is not (or no longer) a hub listener is ignored. */
  fromShard(shard: number, m: HubFromShard): void {
    const c = this.#controls.get(m.listener);
    if (c) {
      c.fromShard(shard, m);
      return;
    }
    // The listener was removed by a reload and its shards have not caught up yet: its clients'
    // sends and requests are answered, never left to hang.
    if (m.type === 'hub-send' || m.type === 'hub-request') {
      this.drop('node_unavailable');
      const frame = clientErrorFrame('node_unavailable', m.type === 'hub-request' ? m.reqId : m.id);
      this.#opts.shards.post(shard, { type: 'hub-reply', listener: m.listener, clientId: m.clientId, frame });
    }
  }

  /** A shard went down (any reason): its clients are gone. */
  shardDown(shard: number): void {
    for (const c of this.#controls.values()) c.shardDown(shard);
  }

  /** A shard (re)started and is ready: it gets each hub listener's ready nodes. */
  shardReady(post: (m: HubToShard) => boolean): void {
    for (const c of this.#controls.values()) c.shardReady(post);
  }

  /** Sends every hub listener's ready nodes to every running shard (after a shard config push). */
  announce(): void {
    for (const c of this.#controls.values()) c.announce();
  }

  /**
   * Reload: removed hub listeners stop their whole `hub:NAME` subtree (pending requests fail with
   * `node_unavailable`), added ones start theirs, kept ones apply their node changes.
   */
  async apply(prev: readonly ListenerConfig[], next: readonly ListenerConfig[]): Promise<void> {
    const before = new Map(hubListeners(prev).map((l) => [l.name, l]));
    const after = new Map(hubListeners(next).map((l) => [l.name, l]));
    const sup = this.#supervisor;
    for (const name of before.keys()) {
      if (after.has(name)) continue;
      this.#controls.delete(name);
      if (sup && sup.status !== 'exited') await sup.removeChild(`hub:${name}`);
    }
    for (const [name, l] of after) {
      const c = this.#controls.get(name);
      if (c) {
        if (JSON.stringify(c.config) !== JSON.stringify(l)) await c.update(l);
        continue;
      }
      const added = this.#control(l);
      this.#controls.set(name, added);
      if (sup && sup.status !== 'exited') {
        // A stale child of that name (the subtree gave up and was left) goes first.
        if (sup.child(`hub:${name}`)) await sup.removeChild(`hub:${name}`);
        await sup.startChild(added.child());
      }
    }
  }

  /** For metrics: registered clients per listener, and users online over all hub listeners. */
  stats(): { clients: { listener: string; clients: number }[]; usersOnline: number } {
    let usersOnline = 0;
    const clients: { listener: string; clients: number }[] = [];
    for (const c of this.#controls.values()) {
      const v = c.view();
      clients.push({ listener: c.name, clients: v.clients });
      usersOnline += v.usersOnline;
    }
    return { clients, usersOnline };
  }

  view(): HubListenerView[] {
    return [...this.#controls.values()].map((c) => c.view());
  }
}
