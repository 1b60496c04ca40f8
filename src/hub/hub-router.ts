/**
 * The routing half of a hub listener's control plane: what goes between the shards and the
 * nodes. Apart from HubControl (hub-control.ts), which owns the `hub:LISTENER` subtree whose
 * actors this routes to, so that each reads on its own.
 */
import type { Logger } from 'pino';
import { shardOfClient, type HubFromShard, type HubTarget, type HubToShard } from './messages.ts';
import type { NodeStreamActor } from '../actors/node-stream.ts';
import type { PresenceActor } from '../actors/presence.ts';
import { MAX_PENDING_PER_CLIENT, ackFrame, clientErrorFrame, type RequestTableActor } from '../actors/hub-requests.ts';
import { resumeFailedFrame, type HubClusterActor } from '../cluster/hub-cluster.ts';
import { parseNodeFrame, type NodeFrame } from './node-frames.ts';
import type { HistoryPosition } from './frames.ts';

export { parseNodeFrame } from './node-frames.ts';

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

const BAD_FRAME_LOG_INTERVAL_MS = 1_000;

/** The actors of a hub listener's subtree as they are now: a restarted one is found again, a dead one is absent. */
export interface HubActors {
  presence(): PresenceActor | undefined;
  requests(): RequestTableActor | undefined;
  stream(node: string): NodeStreamActor | undefined;
  /** The configured node ids, in config order. */
  nodes(): string[];
  /** Cluster mode: the link to the other instances (absent without `cluster`, or while it restarts). */
  cluster?(): HubClusterActor | undefined;
}

export interface HubRouterOptions {
  listener: string;
  actors: HubActors;
  shards: HubShards;
  /** Counts a main-side drop (`gatehouse_hub_dropped_total{reason}`). */
  drop: (reason: string) => void;
  log: Logger;
  /** Cluster mode: the listener's `history` (message recovery), read at each push. */
  history?: () => { size: number; ttl: number } | undefined;
}

/**
 * The routing between the shards and the nodes of one hub listener.
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
 * @example
 * const router = new HubRouter({ listener: 'hub', actors, shards, drop, log });
 * router.fromShard(0, { type: 'hub-client-up', listener: 'hub', clientId: '0.abc', userId: 'u1' });
 */
export class HubRouter {
  readonly #opts: HubRouterOptions;
  readonly #ready = new Set<string>();
  /** Users the nodes have been told are online (presence online sent, offline not yet). */
  readonly #announced = new Set<string>();
  #lastBadLog = 0;
  #badSuppressed = 0;
  /** Message recovery: node frames wait here, in order, behind a push being stored in its user's stream. */
  #chain: Promise<void> = Promise.resolve();
  #chained = 0;

  constructor(opts: HubRouterOptions) {
    this.#opts = opts;
  }

  /** Ready nodes, in config order (what `hub-nodes` carries). */
  readyNodes(): string[] {
    return this.#opts.actors.nodes().filter((id) => this.#ready.has(id));
  }

  /** Whether `node`'s stream is ready (it takes frames). */
  isReady(node: string): boolean {
    return this.#ready.has(node);
  }

  /** How many nodes are ready. */
  get readyCount(): number {
    return this.#ready.size;
  }

  // --- presence ---------------------------------------------------------------------------
  // What the nodes were told is kept here, outside the presence actor: a restarted presence
  // neither repeats an online nor forgets to send an offline.

  /** Users the nodes have been told are online, for a restarted presence. */
  toldOnline(): string[] {
    return [...this.#announced];
  }

  /** Presence: `userId` came online here; the ready nodes hear it once (per online stretch across instances). */
  online(userId: string): void {
    this.#opts.actors.cluster?.()?.localOnline(userId);
    this.#announce(userId, true);
  }

  /** Presence: `userId` went offline here (its grace ran out); told only if its online was, and no other instance holds it. */
  offline(userId: string): void {
    const cluster = this.#opts.actors.cluster?.();
    cluster?.localOffline(userId);
    if (!cluster?.remote.has(userId)) this.#announce(userId, false);
  }

  /**
   * Cluster mode: another instance gained or lost `userId`. Online across instances is online
   * here or on any other instance; the nodes hear only the changes of that.
   */
  presenceChanged(userId: string): void {
    const p = this.#opts.actors.presence();
    // Without presence (it restarts) local users are unknown: only an online is safe to tell.
    const on = (p?.isOnline(userId) ?? false) || (this.#opts.actors.cluster?.()?.remote.has(userId) ?? false);
    if (on || p) this.#announce(userId, on);
  }

  #announce(userId: string, on: boolean): void {
    if (on === this.#announced.has(userId)) return;
    if (on) this.#announced.add(userId);
    else this.#announced.delete(userId);
    this.#toReadyNodes(JSON.stringify({ type: 'presence', userId, online: on }));
  }

  /** Presence: a client ended; its pending requests go, and the ready nodes hear it. */
  clientGone(clientId: string, userId: string): void {
    this.#opts.actors.requests()?.dropClient(clientId);
    this.#toReadyNodes(JSON.stringify({ type: 'client-gone', clientId, userId }));
  }

  // --- shards -----------------------------------------------------------------------------

  /** A hub message from shard `shard`. */
  fromShard(shard: number, m: HubFromShard): void {
    const { presence, requests: requestsOf } = this.#opts.actors;
    switch (m.type) {
      case 'hub-client-up':
        this.#opts.actors.cluster?.()?.caps.up(m.clientId, m.userId);
        presence()?.clientUp(shard, m.clientId, m.userId);
        return;
      case 'hub-client-down':
        this.#opts.actors.cluster?.()?.caps.gone(m.clientId);
        // Presence drops the client's pending requests with its client-gone; without presence, here.
        if (!presence()?.clientDown(m.clientId)) requestsOf()?.dropClient(m.clientId);
        return;
      case 'hub-resume': {
        // Message recovery: the missed pushes then `resumed`, or `resume-failed` (no history, Redis away).
        const cluster = this.#opts.history?.() ? this.#opts.actors.cluster?.() : undefined;
        const frames = cluster ? cluster.resume(m.userId, m.epoch, m.offset) : Promise.resolve([resumeFailedFrame(m.epoch, m.offset)]);
        void frames.then((fs) => fs.forEach((f) => this.reply(shard, m.clientId, f)));
        return;
      }
      case 'hub-admit': {
        // Cluster mode: the per-user cap across instances (one Redis round trip, batched).
        // With `history`, the user's history position for the welcome, in the same round trip.
        const cluster = this.#opts.actors.cluster?.();
        const history = this.#opts.history?.();
        const answer = (ok: boolean, pos?: HistoryPosition): void =>
          void this.#opts.shards.post(shard, { type: 'hub-admitted', listener: this.#opts.listener, clientId: m.clientId, ok, ...(ok && pos && { history: pos }) });
        if (!cluster) answer(true);
        else
          Promise.all([cluster.caps.admit(m.clientId, m.userId), history && cluster.position(m.userId, history.ttl)]).then(
            ([ok, pos]) => answer(ok, pos),
            () => answer(true),
          );
        return;
      }
      case 'hub-send':
        if (!this.toNode(m.node, m.frame)) {
          this.#opts.drop('node_unavailable');
          this.reply(shard, m.clientId, clientErrorFrame('node_unavailable', m.id));
        }
        return;
      case 'hub-request': {
        const requests = requestsOf();
        if (requests && requests.pendingFor(m.clientId) >= MAX_PENDING_PER_CLIENT) {
          this.#opts.drop('rate_limited');
          this.reply(shard, m.clientId, clientErrorFrame('rate_limited', m.reqId));
          return;
        }
        if (!requests || !this.toNode(m.node, m.frame)) {
          this.#opts.drop('node_unavailable');
          this.reply(shard, m.clientId, clientErrorFrame('node_unavailable', m.reqId));
          return;
        }
        requests.add({ gid: m.gid, node: m.node, shard, clientId: m.clientId, reqId: m.reqId });
        return;
      }
      case 'hub-delivered':
        requestsOf()?.delivered(m.ack, shard, m.delivered);
        return;
    }
  }

  /** A shard went down: its clients are gone at once, and acks stop waiting for it. */
  shardDown(shard: number): void {
    this.#opts.actors.cluster?.()?.caps.shardDown(shard);
    this.#opts.actors.presence()?.shardDown(shard);
    this.#opts.actors.requests()?.shardDown(shard);
  }

  /** A shard became ready: it learns the ready nodes. */
  shardReady(post: (m: HubToShard) => boolean): void {
    post({ type: 'hub-nodes', listener: this.#opts.listener, ready: this.readyNodes() });
  }

  /** Sends the ready nodes to every running shard. */
  announce(): void {
    const m: HubToShard = { type: 'hub-nodes', listener: this.#opts.listener, ready: this.readyNodes() };
    for (const s of this.#opts.shards.running()) this.#opts.shards.post(s, m);
  }

  /** A client frame to the shard holding the client. */
  reply(shard: number, clientId: string, frame: string): void {
    this.#opts.shards.post(shard, { type: 'hub-reply', listener: this.#opts.listener, clientId, frame });
  }

  // --- nodes ------------------------------------------------------------------------------

  /** A frame to a ready node's stream; false when the node is not ready or its queue is full. */
  toNode(node: string, frame: string): boolean {
    if (!this.#ready.has(node)) return false;
    return this.#opts.actors.stream(node)?.sendFrame(frame) ?? false;
  }

  /**
   * A control frame (presence, client-gone) to every ready node. A node too far behind to take it
   * (its queue is full) would silently lose track of who is online: its stream is restarted
   * instead, and the new session begins with the presence snapshot.
   */
  #toReadyNodes(frame: string): void {
    for (const node of this.#ready) {
      const s = this.#opts.actors.stream(node);
      if (!s || s.sendFrame(frame)) continue;
      this.#opts.log.warn({ node }, 'hub node too far behind to take a control frame: restarting its stream (a new session resends presence)');
      s.restartSession();
    }
  }

  /** Stream `s` of `node` became ready. */
  nodeReady(node: string, s: NodeStreamActor): void {
    if (this.#opts.actors.stream(node) !== s) return;
    this.#ready.add(node);
    // A new stream is a new session for the node: it learns who is online now (on any instance).
    for (const userId of this.#onlineNow()) s.sendFrame(JSON.stringify({ type: 'presence', userId, online: true }));
    this.announce();
  }

  /** Users online now: on this instance, and (cluster mode) on the others. */
  #onlineNow(): Set<string> {
    const out = new Set<string>(this.#opts.actors.presence()?.onlineUsers() ?? []);
    const cluster = this.#opts.actors.cluster?.();
    if (cluster) for (const u of cluster.remote.users()) out.add(u);
    return out;
  }

  /** The node's stream left `ready`, or its actor is gone. Idempotent. */
  nodeDown(node: string, s: NodeStreamActor): void {
    const current = this.#opts.actors.stream(node);
    if (current && current !== s) return;
    const wasReady = this.#ready.delete(node);
    this.#opts.actors.requests()?.failNode(node);
    this.#opts.actors.requests()?.dropAcks(node);
    if (!wasReady) return;
    this.#opts.log.info({ node }, 'hub node down');
    const down: HubToShard = { type: 'hub-node-down', listener: this.#opts.listener, node };
    const nodes: HubToShard = { type: 'hub-nodes', listener: this.#opts.listener, ready: this.readyNodes() };
    for (const shard of this.#opts.shards.running()) {
      this.#opts.shards.post(shard, down);
      this.#opts.shards.post(shard, nodes);
    }
  }

  /** A frame from stream `s` of `node`. */
  nodeFrame(node: string, s: NodeStreamActor, text: string, binary: boolean): void {
    if (this.#opts.actors.stream(node) !== s) return;
    try {
      this.#routeNodeFrame(node, s, text, binary);
    } catch (err) {
      // Whatever a node sends never takes the gateway down: e.g. JSON nested too deep to
      // stringify again (RangeError) is counted and logged as a bad frame.
      this.#badFrame(node, `unusable frame: ${(err as Error).message}`, text);
    }
  }

  #routeNodeFrame(node: string, s: NodeStreamActor, text: string, binary: boolean): void {
    const { drop } = this.#opts;
    const f = binary ? 'binary frame' : parseNodeFrame(text);
    if (typeof f === 'string') {
      this.#badFrame(node, f, text);
      return;
    }
    const requests = this.#opts.actors.requests();
    if (f.type === 'response') {
      const answered = requests?.answer(node, f.id, (reqId) =>
        f.error !== undefined && f.error !== null ? clientErrorFrame('node_error', reqId, f.error) : JSON.stringify({ type: 'response', id: reqId, data: f.data ?? null }),
      );
      if (!answered) {
        drop('late_response');
        this.#opts.log.debug({ node, id: f.id }, 'hub node response for no pending request (timed out, or its client is gone)');
      }
      return;
    }
    const frame = JSON.stringify({ type: 'message', from: node, data: f.data });
    const userId = f.type === 'push' ? f.userId : undefined;
    const history = userId !== undefined ? this.#opts.history?.() : undefined;
    const cluster = this.#opts.actors.cluster?.();
    if ((history && cluster?.linked) || this.#chained > 0) {
      // Stored first (its frame gets `epoch` and `offset`); what the node sent after it waits.
      this.#chained++;
      this.#chain = this.#chain
        .then(async () => this.#deliver(node, s, f, (history && userId !== undefined && (await cluster?.append(userId, frame.slice(0, -1), history))) || frame))
        .catch((err: unknown) => this.#opts.log.error({ err, node }, 'hub: delivering a stored push failed'))
        .finally(() => this.#chained--);
      if (this.#chained > DELIVER_BACKLOG_HIGH) s.pauseUntil(() => this.#chained < DELIVER_BACKLOG_LOW);
      return;
    }
    this.#deliver(node, s, f, frame);
  }

  /** A push or broadcast to this instance's clients (and, cluster mode, published for the others'). */
  #deliver(node: string, s: NodeStreamActor, f: Exclude<NodeFrame, { type: 'response' }>, frame: string): void {
    const { listener, shards: sh, drop } = this.#opts;
    const requests = this.#opts.actors.requests();
    const to: HubTarget = f.type === 'broadcast' ? { kind: 'all' } : f.userId !== undefined ? { kind: 'user', userId: f.userId } : { kind: 'client', clientId: f.clientId! };
    const targets = this.#localShards(to);
    // Cluster mode: one publish for the other instances' clients (a client here needs none).
    const cluster = this.#opts.actors.cluster?.();
    const published = cluster !== undefined && !(to.kind === 'client' && targets.length > 0) && cluster.publish(to, frame);
    if (f.type === 'push' && targets.length === 0 && !published) drop('no_client');
    const wantsAck = f.id !== undefined;
    let ack = 0;
    if (wantsAck) {
      if (requests) ack = requests.openAck(node, f.id, targets);
      else s.sendFrame(ackFrame(f.id, 0));
    }
    const backlog = sh.backlog;
    let behind = false;
    for (const shard of targets) {
      const m: HubToShard = ack ? { type: 'hub-deliver', listener, to, frame, ack } : { type: 'hub-deliver', listener, to, frame };
      if (!sh.post(shard, m) && ack) this.#opts.actors.requests()?.ackMissed(ack, shard);
      if (backlog && backlog(shard) > DELIVER_BACKLOG_HIGH) behind = true;
    }
    // A shard fell behind this node: stop reading the node until every shard has caught up.
    if (behind && backlog) {
      this.#opts.log.debug({ node }, 'hub shards behind: pausing the node stream');
      s.pauseUntil(() => sh.running().every((x) => backlog(x) < DELIVER_BACKLOG_LOW));
    }
  }

  /** The shards of this instance holding the target's clients. */
  #localShards(to: HubTarget): number[] {
    const presence = this.#opts.actors.presence();
    if (to.kind === 'all') return this.#opts.shards.running();
    if (to.kind === 'user') return [...(presence?.shardsOfUser(to.userId) ?? [])];
    const shard = shardOfClient(to.clientId);
    return shard !== undefined && presence?.hasClient(to.clientId) ? [shard] : [];
  }

  /** Cluster mode: a push or broadcast another instance published, to this instance's clients (no ack). */
  deliverRemote(to: HubTarget, frame: string): void {
    const m: HubToShard = { type: 'hub-deliver', listener: this.#opts.listener, to, frame };
    for (const shard of this.#localShards(to)) this.#opts.shards.post(shard, m);
  }

  #badFrame(node: string, why: string, text: string): void {
    this.#opts.drop('bad_node_frame');
    const now = performance.now();
    if (now - this.#lastBadLog < BAD_FRAME_LOG_INTERVAL_MS) {
      this.#badSuppressed++;
      return;
    }
    this.#opts.log.warn({ node, why, sample: text.slice(0, 200), suppressed: this.#badSuppressed }, 'hub node sent a bad frame: dropped, the stream stays');
    this.#lastBadLog = now;
    this.#badSuppressed = 0;
  }
}
