import type { Logger } from 'pino';
import { setup } from 'xstate';
import type { Actor } from '../runtime/actor.ts';
import { TableActor, tableLifecycle } from './table-base.ts';

/** The states of {@link requestTableMachine}. */
export type RequestTableState = 'starting' | 'running' | 'stopping' | 'stopped';
/** The events of {@link requestTableMachine}, owned by the request table. */
export type RequestTableEvent = 'requests.start' | 'requests.stop' | 'requests.stopped';

/**
 * The life of a request table: `running` takes requests and acks; `stopping` answers every
 * pending request with `node_unavailable` and takes nothing new (a request added meanwhile is
 * answered at once); `stopped` is final.
 *
 * @example
 * compile(requestTableMachine).next('running', 'requests.stop'); // 'stopping'
 */
export const requestTableMachine = setup({ types: { events: {} as { type: RequestTableEvent } } }).createMachine({
  id: 'hub-requests',
  initial: 'starting',
  states: {
    starting: { on: { 'requests.start': 'running', 'requests.stop': 'stopping' } },
    running: { on: { 'requests.stop': 'stopping' } },
    stopping: { on: { 'requests.stopped': 'stopped' } },
    stopped: { type: 'final' },
  },
});
const lifecycle = tableLifecycle<RequestTableState, RequestTableEvent>(requestTableMachine, 'requests.stop', 'requests.stopped');

/** Client error codes the control plane answers with (docs/hub-protocol.md). */
export type ClientErrorCode = 'timeout' | 'node_unavailable' | 'node_error' | 'rate_limited';

/**
 * Requests one client may have waiting for answers at once; one more is answered
 * `rate_limited` at once (a node that never answers must not hold thousands of timers per client).
 */
export const MAX_PENDING_PER_CLIENT = 256;

/** `{"type":"error","id":REQ,"code":CODE}`; without `reqId` for an error about a `send`. */
export function clientErrorFrame(code: ClientErrorCode, reqId?: unknown, error?: unknown): string {
  if (reqId === undefined) return JSON.stringify({ type: 'error', code });
  return JSON.stringify(error === undefined ? { type: 'error', id: reqId, code } : { type: 'error', id: reqId, code, error });
}

/** One client request waiting for its node's `response`. */
export interface PendingRequest {
  /** The gateway-scoped id the node sees. */
  gid: string;
  node: string;
  shard: number;
  clientId: string;
  /** The client's own request id. */
  reqId: string;
  timer: NodeJS.Timeout;
}

/** A node `push`/`broadcast` that carried `id`: the shards it went to, and what they delivered. */
interface PendingAck {
  node: string;
  /** The node's id, echoed in the ack. */
  id: unknown;
  waiting: Set<number>;
  delivered: number;
  timer: NodeJS.Timeout;
}

export interface RequestTableOptions {
  /** The actor id given by the supervisor (`requests:LISTENER`). */
  id: string;
  listener: string;
  /** `requestTimeout`, read when a request is added (a reload applies to the next ones). */
  timeoutMs: () => number;
  /** A frame for one client, through its shard (`hub-reply`). */
  reply: (shard: number, clientId: string, frame: string) => void;
  /** A frame for a node (an `ack`); false when its stream is not ready. */
  toNode: (node: string, frame: string) => boolean;
  log: Logger;
  parent?: Actor;
}

/**
 * Ack numbers are unique for the process, not per table: a restarted table must never take a
 * late `hub-delivered` of its previous incarnation for one of its own acks.
 */
let nextAck = 1;

/**
 * The pending-request table of one hub listener (`requests:LISTENER`, type `hub-requests`). Its
 * state is {@link requestTableMachine}'s: it takes requests and acks only while `running`.
 *
 * A request is pending from its `hub-request` until exactly one of: its node's `response`
 * (answered `response`, or `error` `node_error` when the node answered with an error), its
 * `requestTimeout` (`error` `timeout`), its node going down or being removed (`error`
 * `node_unavailable`, all of the node's requests at once), its client or the client's shard going
 * away (removed, no answer: nobody to answer). Each exit goes through one function that removes the
 * entry from the three maps (by gid, by client, by node) and clears its timer, so no path leaves
 * an entry behind. The actor's own exit fails what is still pending with `node_unavailable`.
 *
 * It also holds the pending acks of node pushes that carried an `id` (the ack extension): each
 * waits for a `hub-delivered` from every shard it went to; a shard that goes down counts as
 * having delivered nothing, and past `requestTimeout` the ack is sent with what was counted.
 *
 * @example
 * table.add({ gid: 'g1', node: 'n1', shard: 0, clientId: '0.abc', reqId: 'r1' });
 * table.settle('n1', 'g1', JSON.stringify({ type: 'response', id: 'r1', data: 42 }));
 */
export class RequestTableActor extends TableActor<RequestTableState, RequestTableEvent> {
  readonly listener: string;
  readonly #opts: RequestTableOptions;
  readonly #byGid = new Map<string, PendingRequest>();
  readonly #byClient = new Map<string, Set<string>>();
  readonly #byNode = new Map<string, Set<string>>();
  readonly #acks = new Map<number, PendingAck>();

  constructor(opts: RequestTableOptions) {
    super(opts.id, 'hub-requests', opts.parent, lifecycle);
    this.#opts = opts;
    this.listener = opts.listener;
  }

  start(): this {
    this.step('requests.start');
    this.markRunning();
    return this;
  }

  get pending(): number {
    return this.#byGid.size;
  }

  has(gid: string): boolean {
    return this.#byGid.has(gid);
  }

  /** How many requests of this client are waiting for their node. */
  pendingFor(clientId: string): number {
    return this.#byClient.get(clientId)?.size ?? 0;
  }

  /** Adds a pending request; its timeout starts now. Outside `running` it is answered `node_unavailable` at once. */
  add(r: Omit<PendingRequest, 'timer'>): void {
    if (this.state !== 'running') {
      this.#opts.reply(r.shard, r.clientId, clientErrorFrame('node_unavailable', r.reqId));
      return;
    }
    // The same gid again (not expected: gids are unique per gateway): the older one is answered.
    if (this.#byGid.has(r.gid)) this.#finish(r.gid, clientErrorFrame('node_unavailable', this.#byGid.get(r.gid)!.reqId));
    const timer = setTimeout(() => {
      if (this.#byGid.get(r.gid)?.timer !== timer) return;
      this.#opts.log.debug({ node: r.node, clientId: r.clientId, reqId: r.reqId }, 'hub request timed out');
      this.#finish(r.gid, clientErrorFrame('timeout', r.reqId));
    }, this.#opts.timeoutMs());
    const entry: PendingRequest = { ...r, timer };
    this.#byGid.set(r.gid, entry);
    addTo(this.#byClient, r.clientId, r.gid);
    addTo(this.#byNode, r.node, r.gid);
  }

  /**
   * A node answered request `gid`: `frame(reqId)` builds the client frame. False when no such
   * request is pending for that node (already timed out, its client gone, or another node's).
   */
  answer(node: string, gid: string, frame: (reqId: string) => string): boolean {
    const e = this.#byGid.get(gid);
    if (!e || e.node !== node) return false;
    this.#finish(gid, frame(e.reqId));
    return true;
  }

  /** The node is down or removed: each of its pending requests fails with `node_unavailable` now. */
  failNode(node: string): number {
    const gids = this.#byNode.get(node);
    if (!gids) return 0;
    let n = 0;
    for (const gid of [...gids]) {
      const e = this.#byGid.get(gid);
      if (!e) continue;
      this.#finish(gid, clientErrorFrame('node_unavailable', e.reqId));
      n++;
    }
    return n;
  }

  /** The client is gone: its pending requests are removed (no one to answer). */
  dropClient(clientId: string): number {
    const gids = this.#byClient.get(clientId);
    if (!gids) return 0;
    let n = 0;
    for (const gid of [...gids]) if (this.#finish(gid)) n++;
    return n;
  }

  /** The shard is gone with its clients: their requests are removed, and acks stop waiting for it. */
  shardDown(shard: number): void {
    for (const [gid, e] of [...this.#byGid]) if (e.shard === shard) this.#finish(gid);
    for (const [ack, a] of [...this.#acks]) if (a.waiting.delete(shard) && a.waiting.size === 0) this.#sendAck(ack, a);
  }

  /** Removes a request from every map and clears its timer; answers the client with `frame` if given. */
  #finish(gid: string, frame?: string): boolean {
    const e = this.#byGid.get(gid);
    if (!e) return false;
    clearTimeout(e.timer);
    this.#byGid.delete(gid);
    removeFrom(this.#byClient, e.clientId, gid);
    removeFrom(this.#byNode, e.node, gid);
    if (frame !== undefined) this.#opts.reply(e.shard, e.clientId, frame);
    return true;
  }

  // --- acks (extension) ------------------------------------------------------------------

  /**
   * Opens an ack for a node frame with `id` that went to `shards`; returns its number, to put in
   * the `hub-deliver` messages. With no shard, the ack (`delivered: 0`) is sent at once and 0 is returned.
   */
  openAck(node: string, id: unknown, shards: Iterable<number>): number {
    const waiting = new Set(shards);
    if (waiting.size === 0 || this.state !== 'running') {
      this.#opts.toNode(node, ackFrame(id, 0));
      return 0;
    }
    const ack = nextAck++;
    const timer = setTimeout(() => {
      const a = this.#acks.get(ack);
      if (!a) return;
      this.#opts.log.warn({ node, shardsMissing: [...a.waiting] }, 'hub ack: not every shard answered in time; acking what was counted');
      this.#sendAck(ack, a);
    }, this.#opts.timeoutMs());
    this.#acks.set(ack, { node, id, waiting, delivered: 0, timer });
    return ack;
  }

  /** A shard posted to could not take the frame (not running): it delivered nothing. */
  ackMissed(ack: number, shard: number): void {
    this.delivered(ack, shard, 0);
  }

  /** A shard's `hub-delivered`. */
  delivered(ack: number, shard: number, n: number): void {
    const a = this.#acks.get(ack);
    if (!a || !a.waiting.delete(shard)) return;
    a.delivered += n > 0 ? n : 0;
    if (a.waiting.size === 0) this.#sendAck(ack, a);
  }

  /** The node went down: its acks are dropped (a new stream is a new session). */
  dropAcks(node: string): void {
    for (const [ack, a] of [...this.#acks]) {
      if (a.node !== node) continue;
      clearTimeout(a.timer);
      this.#acks.delete(ack);
    }
  }

  #sendAck(ack: number, a: PendingAck): void {
    clearTimeout(a.timer);
    this.#acks.delete(ack);
    if (!this.#opts.toNode(a.node, ackFrame(a.id, a.delivered))) this.#opts.log.debug({ node: a.node }, 'hub ack not sent: node not ready');
  }

  override describe(): Record<string, unknown> {
    return this.sizes();
  }

  /** Map sizes, for tests, `/actors` and the hub view. */
  sizes(): { pending: number; byClient: number; byNode: number; acks: number } {
    return { pending: this.#byGid.size, byClient: this.#byClient.size, byNode: this.#byNode.size, acks: this.#acks.size };
  }

  /** Whatever ends the table, every waiting client gets its answer and no timer survives it. */
  protected release(): void {
    for (const [gid, e] of [...this.#byGid]) {
      try {
        this.#finish(gid, clientErrorFrame('node_unavailable', e.reqId));
      } catch {
        // A reply that throws must not keep the other clients waiting.
        this.#byGid.delete(gid);
      }
    }
    for (const a of this.#acks.values()) clearTimeout(a.timer);
    this.#acks.clear();
    this.#byClient.clear();
    this.#byNode.clear();
  }
}

/**
 * The `ack` frame a node gets for a push or broadcast that carried `id`.
 *
 * @example
 * ackFrame('p1', 3); // '{"type":"ack","id":"p1","delivered":3}'
 */
export function ackFrame(id: unknown, delivered: number): string {
  return JSON.stringify({ type: 'ack', id, delivered });
}

function addTo(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom(m: Map<string, Set<string>>, k: string, v: string): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}
