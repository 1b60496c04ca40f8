import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import type { HubListenerConfig, HubNodeConfig } from '../config/types.ts';
import { shardOfClient, type HubFromShard, type HubTarget, type HubToShard } from './messages.ts';
import { NodeStreamActor, type NodeStreamOptions } from '../actors/node-stream.ts';
import { PresenceActor } from '../actors/presence.ts';
import { MAX_PENDING_PER_CLIENT, RequestTableActor, ackFrame, clientErrorFrame } from '../actors/hub-requests.ts';

/** How the hub control plane reaches the data-plane shards. */
export interface HubShards {
  /** Posts to one shard; false when it is not running. */
  post(shard: number, m: HubToShard): boolean;
  /** The indexes of the shards running now. */
  running(): number[];
  /** `hub-deliver` messages posted to the shard that it has not processed yet (node pacing); none when absent. */
  backlog?(shard: number): number;
}

/**
 * Node pacing: a node stream stops reading its node while some shard has more than this many
 * `hub-deliver` messages not yet processed, and reads again once every shard is below
 * {@link DELIVER_BACKLOG_LOW}. The queue between the main thread and a slow shard stays bounded.
 */
export const DELIVER_BACKLOG_HIGH = 4_096;
export const DELIVER_BACKLOG_LOW = 1_024;

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
}

import type { HubListenerView } from '../admin/types.ts';

export type { HubListenerView };

/** Node frames, as validated. */
type NodeFrame =
  | { type: 'response'; id: string; data?: unknown; error?: unknown }
  | { type: 'push'; userId?: string; clientId?: string; data: unknown; id?: unknown }
  | { type: 'broadcast'; data: unknown; id?: unknown };

const BAD_FRAME_LOG_INTERVAL_MS = 1_000;

/** Child ids inside `hub:LISTENER`. */
export const hubChildIds = {
  supervisor: (listener: string) => `hub:${listener}`,
  presence: (listener: string) => `presence:${listener}`,
  requests: (listener: string) => `requests:${listener}`,
  node: (listener: string, node: string) => `node:${listener}/${node}`,
};

/** After a presence restart, how long (beyond the grace) the shards have to re-announce their clients. */
const PRESENCE_SETTLE_MS = 1_000;

/**
 * The main-thread side of one hub listener: the `hub:LISTENER` supervisor (one_for_one) with its
 * PresenceActor (`presence:LISTENER`), its pending-request table (`requests:LISTENER`) and a
 * NodeStreamActor per node (`node:LISTENER/NODEID`), and the routing between shards and nodes.
 *
 * - From shards (`fromShard`): `hub-client-up`/`hub-client-down` to presence, `hub-send` to the
 *   node's stream (or `error` `node_unavailable` back to the client), `hub-request` to the node
 *   and the pending table, `hub-delivered` to the pending ack.
 * - From nodes: `response` to the pending request's client (`hub-reply`), `push` to the shards
 *   holding the user's clients or to the client's shard, `broadcast` to every shard (`hub-deliver`);
 *   anything else is dropped as `bad_node_frame`, and the stream stays.
 * - Node ready/down: `hub-nodes` (the ready list, config order) to every shard on each change;
 *   on down also `hub-node-down`, and its pending requests fail with `node_unavailable`. A node
 *   that becomes ready gets `presence` `online: true` for every user online now.
 * - Presence changes and `client-gone` go to every ready node.
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
  /** Users the nodes have been told are online (presence online sent, offline not yet). */
  readonly #announced = new Set<string>();
  #requests: RequestTableActor | undefined;
  readonly #streams = new Map<string, NodeStreamActor>();
  readonly #ready = new Set<string>();
  #lastBadLog = 0;
  #badSuppressed = 0;

  constructor(opts: HubControlOptions) {
    this.#opts = opts;
    this.#cfg = opts.config;
    this.name = opts.config.name;
    this.#log = opts.log.child({ listener: this.name });
    if (!opts.config.nodes?.length && opts.config.discovery) {
      this.#log.warn({ service: opts.config.discovery.service }, 'hub listener: node discovery is not available yet; this listener has no nodes');
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

  /** The live node stream of `node`. */
  stream(node: string): NodeStreamActor | undefined {
    return this.#streams.get(node);
  }

  /** Ready nodes, in config order (what `hub-nodes` carries). */
  readyNodes(): string[] {
    return (this.#cfg.nodes ?? []).map((n) => n.id).filter((id) => this.#ready.has(id));
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
    return [this.#presenceChild(), this.#requestsChild(), ...(this.#cfg.nodes ?? []).map((n) => this.#nodeChild(n))];
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
          // What the nodes were told is kept here, outside the actor: a restarted presence neither
          // repeats an online nor forgets to send an offline.
          onOnline: (userId) => {
            if (this.#announced.has(userId)) return;
            this.#announced.add(userId);
            this.#toReadyNodes(JSON.stringify({ type: 'presence', userId, online: true }));
          },
          onOffline: (userId) => {
            if (this.#announced.delete(userId)) this.#toReadyNodes(JSON.stringify({ type: 'presence', userId, online: false }));
          },
          ...(this.#presenceStarts > 0 && { previouslyOnline: [...this.#announced], settleMs: this.#cfg.presenceGrace + PRESENCE_SETTLE_MS }),
          onClientGone: (clientId, userId) => {
            this.#requests?.dropClient(clientId);
            this.#toReadyNodes(JSON.stringify({ type: 'client-gone', clientId, userId }));
          },
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
          reply: (shard, clientId, frame) => this.#reply(shard, clientId, frame),
          toNode: (node, frame) => this.#toNode(node, frame),
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
          onFrame: (text, binary) => this.#nodeFrame(n.id, s, text, binary),
          onReady: () => this.#nodeReady(n.id, s),
          onDown: () => this.#nodeDown(n.id, s),
          ...this.#opts.streamTuning,
        });
        this.#streams.set(n.id, s);
        s.monitor(() => {
          if (this.#streams.get(n.id) === s) this.#streams.delete(n.id);
          this.#nodeDown(n.id, s);
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

  // --- shards -----------------------------------------------------------------------------

  /** A hub message from shard `shard`. */
  fromShard(shard: number, m: HubFromShard): void {
    switch (m.type) {
      case 'hub-client-up':
        this.#presence?.clientUp(shard, m.clientId, m.userId);
        return;
      case 'hub-client-down':
        // Presence drops the client's pending requests with its client-gone; without presence, here.
        if (!this.#presence?.clientDown(m.clientId)) this.#requests?.dropClient(m.clientId);
        return;
      case 'hub-send':
        if (!this.#toNode(m.node, m.frame)) {
          this.#opts.drop('node_unavailable');
          this.#reply(shard, m.clientId, clientErrorFrame('node_unavailable', m.id));
        }
        return;
      case 'hub-request': {
        const requests = this.#requests;
        if (requests && requests.pendingFor(m.clientId) >= MAX_PENDING_PER_CLIENT) {
          this.#opts.drop('rate_limited');
          this.#reply(shard, m.clientId, clientErrorFrame('rate_limited', m.reqId));
          return;
        }
        if (!requests || !this.#toNode(m.node, m.frame)) {
          this.#opts.drop('node_unavailable');
          this.#reply(shard, m.clientId, clientErrorFrame('node_unavailable', m.reqId));
          return;
        }
        requests.add({ gid: m.gid, node: m.node, shard, clientId: m.clientId, reqId: m.reqId });
        return;
      }
      case 'hub-delivered':
        this.#requests?.delivered(m.ack, shard, m.delivered);
        return;
    }
  }

  /** A shard went down: its clients are gone at once, and acks stop waiting for it. */
  shardDown(shard: number): void {
    this.#presence?.shardDown(shard);
    this.#requests?.shardDown(shard);
  }

  /** A shard became ready: it learns the ready nodes. */
  shardReady(post: (m: HubToShard) => boolean): void {
    post({ type: 'hub-nodes', listener: this.name, ready: this.readyNodes() });
  }

  /** Sends the ready nodes to every running shard. */
  announce(): void {
    const m: HubToShard = { type: 'hub-nodes', listener: this.name, ready: this.readyNodes() };
    for (const s of this.#opts.shards.running()) this.#opts.shards.post(s, m);
  }

  #reply(shard: number, clientId: string, frame: string): void {
    this.#opts.shards.post(shard, { type: 'hub-reply', listener: this.name, clientId, frame });
  }

  // --- nodes ------------------------------------------------------------------------------

  #toNode(node: string, frame: string): boolean {
    if (!this.#ready.has(node)) return false;
    return this.#streams.get(node)?.sendFrame(frame) ?? false;
  }

  /**
   * A control frame (presence, client-gone) to every ready node. A node too far behind to take it
   * (its queue is full) would silently lose track of who is online: its stream is restarted
   * instead, and the new session begins with the presence snapshot.
   */
  #toReadyNodes(frame: string): void {
    for (const node of this.#ready) {
      const s = this.#streams.get(node);
      if (!s || s.sendFrame(frame)) continue;
      this.#log.warn({ node }, 'hub node too far behind to take a control frame: restarting its stream (a new session resends presence)');
      s.restartSession();
    }
  }

  #nodeReady(node: string, s: NodeStreamActor): void {
    if (this.#streams.get(node) !== s) return;
    this.#ready.add(node);
    // A new stream is a new session for the node: it learns who is online now.
    const p = this.#presence;
    if (p) for (const userId of p.onlineUsers()) s.sendFrame(JSON.stringify({ type: 'presence', userId, online: true }));
    this.announce();
  }

  /** The node's stream left `ready`, or its actor is gone. Idempotent. */
  #nodeDown(node: string, s: NodeStreamActor): void {
    const current = this.#streams.get(node);
    if (current && current !== s) return;
    const wasReady = this.#ready.delete(node);
    this.#requests?.failNode(node);
    this.#requests?.dropAcks(node);
    if (!wasReady) return;
    this.#log.info({ node }, 'hub node down');
    const down: HubToShard = { type: 'hub-node-down', listener: this.name, node };
    const nodes: HubToShard = { type: 'hub-nodes', listener: this.name, ready: this.readyNodes() };
    for (const shard of this.#opts.shards.running()) {
      this.#opts.shards.post(shard, down);
      this.#opts.shards.post(shard, nodes);
    }
  }

  #nodeFrame(node: string, s: NodeStreamActor, text: string, binary: boolean): void {
    if (this.#streams.get(node) !== s) return;
    try {
      this.#routeNodeFrame(node, s, text, binary);
    } catch (err) {
      // Whatever a node sends never takes the gateway down: e.g. JSON nested too deep to
      // stringify again (RangeError) is counted and logged as a bad frame.
      this.#badFrame(node, `unusable frame: ${(err as Error).message}`, text);
    }
  }

  #routeNodeFrame(node: string, s: NodeStreamActor, text: string, binary: boolean): void {
    const f = binary ? 'binary frame' : parseNodeFrame(text);
    if (typeof f === 'string') {
      this.#badFrame(node, f, text);
      return;
    }
    if (f.type === 'response') {
      const answered = this.#requests?.answer(node, f.id, (reqId) =>
        f.error !== undefined && f.error !== null ? clientErrorFrame('node_error', reqId, f.error) : JSON.stringify({ type: 'response', id: reqId, data: f.data ?? null }),
      );
      if (!answered) {
        this.#opts.drop('late_response');
        this.#log.debug({ node, id: f.id }, 'hub node response for no pending request (timed out, or its client is gone)');
      }
      return;
    }
    const frame = JSON.stringify({ type: 'message', from: node, data: f.data });
    let to: HubTarget;
    let shards: Iterable<number>;
    if (f.type === 'broadcast') {
      to = { kind: 'all' };
      shards = this.#opts.shards.running();
    } else if (f.userId !== undefined) {
      to = { kind: 'user', userId: f.userId };
      shards = this.#presence?.shardsOfUser(f.userId) ?? [];
    } else {
      const clientId = f.clientId!;
      to = { kind: 'client', clientId };
      const shard = shardOfClient(clientId);
      shards = shard !== undefined && this.#presence?.hasClient(clientId) ? [shard] : [];
    }
    const targets = [...shards];
    if (f.type === 'push' && targets.length === 0) this.#opts.drop('no_client');
    const wantsAck = f.id !== undefined;
    let ack = 0;
    if (wantsAck) {
      const r = this.#requests;
      if (r) ack = r.openAck(node, f.id, targets);
      else s.sendFrame(ackFrame(f.id, 0));
    }
    const backlog = this.#opts.shards.backlog;
    let behind = false;
    for (const shard of targets) {
      const m: HubToShard = ack ? { type: 'hub-deliver', listener: this.name, to, frame, ack } : { type: 'hub-deliver', listener: this.name, to, frame };
      if (!this.#opts.shards.post(shard, m) && ack) this.#requests?.ackMissed(ack, shard);
      if (backlog && backlog(shard) > DELIVER_BACKLOG_HIGH) behind = true;
    }
    // A shard fell behind this node: stop reading the node until every shard has caught up.
    if (behind && backlog) {
      this.#log.debug({ node }, 'hub shards behind: pausing the node stream');
      s.pauseUntil(() => this.#opts.shards.running().every((x) => backlog(x) < DELIVER_BACKLOG_LOW));
    }
  }

  #badFrame(node: string, why: string, text: string): void {
    this.#opts.drop('bad_node_frame');
    const now = performance.now();
    if (now - this.#lastBadLog < BAD_FRAME_LOG_INTERVAL_MS) {
      this.#badSuppressed++;
      return;
    }
    this.#log.warn({ node, why, sample: text.slice(0, 200), suppressed: this.#badSuppressed }, 'hub node sent a bad frame: dropped, the stream stays');
    this.#lastBadLog = now;
    this.#badSuppressed = 0;
  }

  // --- views ------------------------------------------------------------------------------

  view(): HubListenerView {
    const p = this.#presence?.sizes();
    const r = this.#requests?.sizes();
    return {
      listener: this.name,
      nodes: (this.#cfg.nodes ?? []).map((n) => ({ id: n.id, url: n.url, state: this.#streams.get(n.id)?.state ?? 'down', ready: this.#ready.has(n.id) })),
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
      ready: this.#ready.size,
      ...prefix('presence.', this.#presence?.sizes()),
      ...prefix('requests.', this.#requests?.sizes()),
    };
  }
}

function prefix(p: string, o: Record<string, number> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (o) for (const [k, v] of Object.entries(o)) out[p + k] = v;
  return out;
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

/** Parses and checks a node frame; a string says what is wrong with it. */
export function parseNodeFrame(text: string): NodeFrame | string {
  let f: unknown;
  try {
    f = JSON.parse(text);
  } catch {
    return 'malformed JSON';
  }
  if (!f || typeof f !== 'object' || Array.isArray(f)) return 'not a JSON object';
  const o = f as Record<string, unknown>;
  const hasId = o.id !== undefined;
  if (hasId && typeof o.id !== 'string' && typeof o.id !== 'number') return 'id must be a string or a number';
  switch (o.type) {
    case 'response':
      if (!isNonEmptyString(o.id)) return 'response without id';
      if (!('data' in o) && !('error' in o)) return 'response without data or error';
      return o as NodeFrame;
    case 'push': {
      const user = o.userId !== undefined;
      const client = o.clientId !== undefined;
      if (user === client) return 'push needs exactly one of userId and clientId';
      if (user && !isNonEmptyString(o.userId)) return 'push userId must be a non-empty string';
      if (client && !isNonEmptyString(o.clientId)) return 'push clientId must be a non-empty string';
      if (!('data' in o)) return 'push without data';
      return o as NodeFrame;
    }
    case 'broadcast':
      if (!('data' in o)) return 'broadcast without data';
      return o as NodeFrame;
    default:
      return typeof o.type === 'string' ? `unknown type ${JSON.stringify(o.type.slice(0, 40))}` : 'no type';
  }
}
