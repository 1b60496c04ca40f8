import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import type { HubListenerConfig, HubNodeConfig } from '../config/types.ts';
import type { HubListenerView } from '../admin/types.ts';
import type { HubFromShard, HubToShard } from './messages.ts';
import { NodeStreamActor, type NodeStreamOptions } from '../actors/node-stream.ts';
import { PresenceActor } from '../actors/presence.ts';
import { RequestTableActor } from '../actors/hub-requests.ts';
import { HubRouter, type HubShards } from './hub-router.ts';
import { HubClusterActor } from '../cluster/hub-cluster.ts';
import type { ClusterActor } from '../cluster/cluster.ts';

// The router's public names, importable with the control plane they belong to.
export { DELIVER_BACKLOG_HIGH, DELIVER_BACKLOG_LOW, parseNodeFrame, type HubShards } from './hub-router.ts';
export type { HubListenerView };

/** Dial tuning of node streams (tests shorten it). */
export type NodeStreamTuning = Partial<Pick<NodeStreamOptions, 'connectTimeoutMs' | 'backoffBaseMs' | 'backoffCapMs' | 'random'>>;

export interface HubControlOptions {
  config: HubListenerConfig;
  shards: HubShards;
  /** `hello`'s gateId: `cluster.instanceId`, or the host name. */
  gateId: () => string;
  /** Counts a main-side drop (`gatehouse_hub_dropped_total{reason}`). */
  drop: (reason: string) => void;
  log: Logger;
  streamTuning?: NodeStreamTuning;
  /** Cluster mode: the cluster actor while it runs (then `hub-cluster:LISTENER` links the instances). */
  cluster?: () => ClusterActor | undefined;
}

/** Child ids inside `hub:LISTENER`. */
export const hubChildIds = {
  supervisor: (listener: string) => `hub:${listener}`,
  presence: (listener: string) => `presence:${listener}`,
  requests: (listener: string) => `requests:${listener}`,
  cluster: (listener: string) => `hub-cluster:${listener}`,
  node: (listener: string, node: string) => `node:${listener}/${node}`,
};

/** After a presence restart, how long (beyond the grace) the shards have to re-announce their clients. */
const PRESENCE_SETTLE_MS = 1_000;

/**
 * The main-thread side of one hub listener: the `hub:LISTENER` supervisor (one_for_one) with its
 * PresenceActor (`presence:LISTENER`), its pending-request table (`requests:LISTENER`) and a
 * NodeStreamActor per node (`node:LISTENER/NODEID`), and the routing between shards and nodes,
 * which its {@link HubRouter} does.
 *
 * The actors it routes to are found through the references their child specs set at start and
 * their DOWN clears: a restarted actor is found again, a dead one is never used.
 *
 * @example
 * const hub = new HubControl({ config, shards, gateId: () => 'gw-1', drop, log });
 * await hubsSupervisor.startChild(hub.child());
 * hub.fromShard(0, { type: 'hub-client-up', listener: 'hub', clientId: '0.abc', userId: 'u1' });
 */
export class HubControl {
  readonly name: string;
  #cfg: HubListenerConfig;
  readonly #opts: HubControlOptions;
  readonly #log: Logger;
  #supervisor: Supervisor | undefined;
  #presence: PresenceActor | undefined;
  #presenceStarts = 0;
  #requests: RequestTableActor | undefined;
  #cluster: HubClusterActor | undefined;
  readonly #streams = new Map<string, NodeStreamActor>();
  readonly #router: HubRouter;

  constructor(opts: HubControlOptions) {
    this.#opts = opts;
    this.#cfg = opts.config;
    this.name = opts.config.name;
    this.#log = opts.log.child({ listener: this.name });
    this.#router = new HubRouter({
      listener: this.name,
      actors: {
        presence: () => this.#presence,
        requests: () => this.#requests,
        stream: (node) => this.#streams.get(node),
        nodes: () => (this.#cfg.nodes ?? []).map((n) => n.id),
        cluster: () => this.#cluster,
      },
      shards: opts.shards,
      drop: opts.drop,
      log: this.#log,
      history: () => this.#cfg.history,
    });
    if (!opts.config.nodes?.length && opts.config.discovery) {
      this.#log.info({ service: opts.config.discovery.service }, 'hub listener: no node of its service is registered yet');
    }
  }

  get config(): HubListenerConfig {
    return this.#cfg;
  }

  get presence(): PresenceActor | undefined {
    return this.#presence;
  }

  get requests(): RequestTableActor | undefined {
    return this.#requests;
  }

  /** Cluster mode: the link to the other instances. */
  get cluster(): HubClusterActor | undefined {
    return this.#cluster;
  }

  /** The live node stream of `node`. */
  stream(node: string): NodeStreamActor | undefined {
    return this.#streams.get(node);
  }

  /** Ready nodes, in config order (what `hub-nodes` carries). */
  readyNodes(): string[] {
    return this.#router.readyNodes();
  }

  // --- the subtree ----------------------------------------------------------------------

  /** The `hub:LISTENER` child spec. Its children are built from the config current at each (re)start. */
  child(): ChildSpec {
    const id = hubChildIds.supervisor(this.name);
    return {
      id,
      restart: 'permanent',
      supervisor: true,
      shutdown: 'infinity',
      start: ({ parent, log }) => {
        const sup = new Supervisor({ id, type: 'hub', strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: this.#children() }, { parent, log });
        this.#supervisor = sup;
        return sup.start();
      },
    };
  }

  #children(): ChildSpec[] {
    return [this.#presenceChild(), ...(this.#opts.cluster ? [this.#clusterChild(this.#opts.cluster)] : []), this.#requestsChild(), ...(this.#cfg.nodes ?? []).map((n) => this.#nodeChild(n))];
  }

  /** Cluster mode: `hub-cluster:LISTENER`, after presence (it publishes presence's users) and before the node streams. */
  #clusterChild(cluster: () => ClusterActor | undefined): ChildSpec {
    return {
      id: hubChildIds.cluster(this.name),
      restart: 'permanent',
      shutdown: 2_000,
      start: ({ id, parent, log }) => {
        const c = new HubClusterActor({
          id,
          listener: this.name,
          parent,
          log: log.child({ actorId: id, actorType: 'hub-cluster', listener: this.name }),
          cluster,
          localUsers: () => this.#presence?.onlineUsers(),
          maxClientsPerUser: () => this.#cfg.maxClientsPerUser,
          deliver: (to, frame) => this.#router.deliverRemote(to, frame),
          presenceChanged: (userId) => this.#router.presenceChanged(userId),
        });
        this.#cluster = c;
        c.monitor(() => {
          if (this.#cluster === c) this.#cluster = undefined;
        });
        return c.start();
      },
    };
  }

  #presenceChild(): ChildSpec {
    return {
      id: hubChildIds.presence(this.name),
      restart: 'permanent',
      shutdown: 1_000,
      start: ({ id, parent, log }) => {
        const p = new PresenceActor({
          id,
          listener: this.name,
          parent,
          log: log.child({ actorId: id, actorType: 'presence', listener: this.name }),
          graceMs: () => this.#cfg.presenceGrace,
          // What the nodes were told is kept by the router, outside the actor (see HubRouter.online).
          onOnline: (userId) => this.#router.online(userId),
          onOffline: (userId) => this.#router.offline(userId),
          ...(this.#presenceStarts > 0 && { previouslyOnline: this.#router.toldOnline(), settleMs: this.#cfg.presenceGrace + PRESENCE_SETTLE_MS }),
          onClientGone: (clientId, userId) => this.#router.clientGone(clientId, userId),
        });
        this.#presence = p;
        p.monitor(() => {
          if (this.#presence === p) this.#presence = undefined;
        });
        // A restarted presence starts empty: the shards announce their clients again, so users
        // stay online (nodes may hear `online: true` again for users they already had online).
        const restarted = this.#presenceStarts++ > 0;
        const started = p.start();
        if (restarted) {
          this.#log.warn('presence restarted: shards re-announce their clients');
          for (const s of this.#opts.shards.running()) this.#opts.shards.post(s, { type: 'hub-resync', listener: this.name });
        }
        return started;
      },
    };
  }

  #requestsChild(): ChildSpec {
    return {
      id: hubChildIds.requests(this.name),
      restart: 'permanent',
      shutdown: 1_000,
      start: ({ id, parent, log }) => {
        const r = new RequestTableActor({
          id,
          listener: this.name,
          parent,
          log: log.child({ actorId: id, actorType: 'hub-requests', listener: this.name }),
          timeoutMs: () => this.#cfg.requestTimeout,
          reply: (shard, clientId, frame) => this.#router.reply(shard, clientId, frame),
          toNode: (node, frame) => this.#router.toNode(node, frame),
        });
        this.#requests = r;
        r.monitor(() => {
          if (this.#requests === r) this.#requests = undefined;
        });
        return r.start();
      },
    };
  }

  #nodeChild(n: HubNodeConfig): ChildSpec {
    return {
      id: hubChildIds.node(this.name, n.id),
      restart: 'permanent',
      shutdown: 2_000,
      start: ({ id, parent, log }) => {
        const s: NodeStreamActor = new NodeStreamActor({
          id,
          listener: this.name,
          node: n.id,
          url: n.url,
          parent,
          log: log.child({ actorId: id, actorType: 'node-stream', listener: this.name }),
          settings: () => ({ pingIntervalMs: this.#cfg.pingInterval, gateId: this.#opts.gateId() }),
          onFrame: (text, binary) => this.#router.nodeFrame(n.id, s, text, binary),
          onReady: () => this.#router.nodeReady(n.id, s),
          onDown: () => this.#router.nodeDown(n.id, s),
          ...this.#opts.streamTuning,
        });
        this.#streams.set(n.id, s);
        s.monitor(() => {
          if (this.#streams.get(n.id) === s) this.#streams.delete(n.id);
          this.#router.nodeDown(n.id, s);
        });
        return s.start();
      },
    };
  }

  /**
   * Reload: the new settings apply at once (grace, timeout and ping interval are read when used);
   * nodes removed or whose `url` changed stop (their pending requests fail with
   * `node_unavailable`), nodes added or changed start.
   */
  async update(next: HubListenerConfig): Promise<void> {
    const prev = this.#cfg;
    this.#cfg = next;
    const sup = this.#supervisor;
    if (sup && sup.status !== 'exited') {
      const before = new Map((prev.nodes ?? []).map((n) => [n.id, n.url]));
      const after = new Map((next.nodes ?? []).map((n) => [n.id, n.url]));
      for (const [id, url] of before) if (after.get(id) !== url) await sup.removeChild(hubChildIds.node(this.name, id));
      for (const n of next.nodes ?? []) if (before.get(n.id) !== n.url) await sup.startChild(this.#nodeChild(n));
    }
    this.announce();
  }

  // --- routing (HubRouter) ---------------------------------------------------------------

  /** A hub message from shard `shard`. */
  fromShard(shard: number, m: HubFromShard): void {
    this.#router.fromShard(shard, m);
  }

  /** A shard went down: its clients are gone at once, and acks stop waiting for it. */
  shardDown(shard: number): void {
    this.#router.shardDown(shard);
  }

  /** A shard became ready: it learns the ready nodes. */
  shardReady(post: (m: HubToShard) => boolean): void {
    this.#router.shardReady(post);
  }

  /** Sends the ready nodes to every running shard. */
  announce(): void {
    this.#router.announce();
  }

  // --- views ------------------------------------------------------------------------------

  view(): HubListenerView {
    const p = this.#presence?.sizes();
    const r = this.#requests?.sizes();
    return {
      listener: this.name,
      nodes: (this.#cfg.nodes ?? []).map((n) => ({ id: n.id, url: n.url, state: this.#streams.get(n.id)?.state ?? 'down', ready: this.#router.isReady(n.id) })),
      clients: p?.clients ?? 0,
      usersOnline: p?.users ?? 0,
      usersInGrace: p?.inGrace ?? 0,
      pendingRequests: r?.pending ?? 0,
      pendingAcks: r?.acks ?? 0,
    };
  }

  /** Sizes of every map this listener's control plane holds (all 0 when nothing is connected or pending). */
  sizes(): Record<string, number> {
    return {
      streams: this.#streams.size,
      ready: this.#router.readyCount,
      ...prefix('presence.', this.#presence?.sizes()),
      ...prefix('requests.', this.#requests?.sizes()),
      ...prefix('cluster.', this.#cluster && { ...this.#cluster.remote.sizes(), ...this.#cluster.caps.sizes() }),
    };
  }
}

function prefix(p: string, o: Record<string, number> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (o) for (const [k, v] of Object.entries(o)) out[p + k] = v;
  return out;
}
