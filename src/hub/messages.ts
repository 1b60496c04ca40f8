/**
 * The hub's cross-thread contract: what a shard's hub listener and the main thread's hub control
 * plane say to each other over the shard's MessagePort, and the few pure functions both sides must
 * agree on (client ids, sticky node choice, per-user keys).
 *
 * Split of the hub (see docs/architecture.md, "Hub"):
 * - shard (worker thread): `HubListenerActor` per hub listener terminates WebSocket clients (JWT,
 *   per-user cap, `welcome`) and runs a `ClientProxyActor` per client (frames, send queue,
 *   ping/pong, bindings to nodes). Clients live in the listener's Registry (indexes: user, node).
 * - main thread: `hub:NAME` supervisor per hub listener with a `NodeStreamActor` per node (the
 *   one stream per node per gateway instance), a `PresenceActor` (users online across shards,
 *   grace timers) and the pending-request table (gateway-scoped request ids, timeouts).
 *
 * Frames travel as ready-to-send JSON text where possible, so a message is parsed once on the way
 * in and stringified once on the way out: the shard builds node frames (`client-message`,
 * `request`), the main thread builds client frames (`message`, `response`, `error`, `node-down`).
 */
import { randomBytes } from 'node:crypto';
import type { HistoryPosition } from './frames.ts';

/** Shard to main thread. Every message names its hub listener. */
export type HubFromShard =
  /** A client got its `welcome` (presence: a user's first client makes it online). */
  | { type: 'hub-client-up'; listener: string; clientId: string; userId: string }
  /** A client is gone, whatever ended it (close, drop, ping timeout, slow consumer, crash, drain). */
  | { type: 'hub-client-down'; listener: string; clientId: string; userId: string }
  /** A client `send`: `frame` is the node frame `{"type":"client-message",clientId,userId,data}`. */
  | { type: 'hub-send'; listener: string; node: string; clientId: string; frame: string; id?: string | number }
  /**
   * A client `request`: `frame` is the node frame `{"type":"request","id":GID,clientId,userId,data}`
   * where GID = `gid` (gateway-scoped, unique per gateway instance); `reqId` is the client's own id.
   */
  | { type: 'hub-request'; listener: string; node: string; clientId: string; reqId: string; gid: string; frame: string }
  /** Answer to a `hub-deliver` carrying `ack`: how many live clients on this shard the frame was queued to. */
  | { type: 'hub-delivered'; listener: string; ack: number; delivered: number }
  /** Cluster mode: may this client of `userId` be admitted (`maxClientsPerUser` across instances)? Answered by `hub-admitted`. */
  | { type: 'hub-admit'; listener: string; clientId: string; userId: string }
  /** A client's `resume`: the pushes to its user after `offset` of `epoch` (answered with `hub-reply` frames). */
  | { type: 'hub-resume'; listener: string; clientId: string; userId: string; epoch: string; offset: number };

/** Where a node's frame goes. */
export type HubTarget = { kind: 'user'; userId: string } | { kind: 'client'; clientId: string } | { kind: 'all' };

/** Main thread to shard. */
export type HubToShard =
  /** The listener's ready nodes (ids, in config order). Sent on every change and when a shard becomes ready. */
  | { type: 'hub-nodes'; listener: string; ready: string[] }
  /**
   * A node's `push`/`broadcast`: `frame` is the client frame `{"type":"message","from":NODE,"data":…}`.
   * With `ack`, the shard answers `hub-delivered` with the same `ack`.
   */
  | { type: 'hub-deliver'; listener: string; to: HubTarget; frame: string; ack?: number }
  /** A node went down: its bound clients get `{"type":"node-down","node":NODE}` and lose the binding. */
  | { type: 'hub-node-down'; listener: string; node: string }
  /** A frame for one client: a `response`, or an `error` for its request or send. */
  | { type: 'hub-reply'; listener: string; clientId: string; frame: string }
  /** The main thread's presence restarted empty: post `hub-client-up` again for every registered client. */
  | { type: 'hub-resync'; listener: string }
  /** Cluster mode: the answer to `hub-admit` (false: the user has `maxClientsPerUser` clients across instances). */
  | { type: 'hub-admitted'; listener: string; clientId: string; ok: boolean; history?: HistoryPosition };

export const HUB_FROM_SHARD_TYPES: ReadonlySet<string> = new Set(['hub-client-up', 'hub-client-down', 'hub-send', 'hub-request', 'hub-delivered', 'hub-admit', 'hub-resume']);
export const HUB_TO_SHARD_TYPES: ReadonlySet<string> = new Set(['hub-nodes', 'hub-deliver', 'hub-node-down', 'hub-reply', 'hub-resync', 'hub-admitted']);

/**
 * The shard a client lives on, from its id. Client ids are `S.RANDOM` (shard index, a dot, then
 * 16 url-safe random characters), so a push to a client goes to one shard with no map to keep.
 *
 * @example
 * shardOfClient('1.q3X9aZ0bC4dE5fG6'); // 1
 * shardOfClient('nope');               // undefined
 */
export function shardOfClient(clientId: string): number | undefined {
  const dot = clientId.indexOf('.');
  if (dot <= 0 || dot > 2) return undefined;
  const n = Number(clientId.slice(0, dot));
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/** Per-thread counter of gateway-scoped request ids, seeded by the clock (see {@link nextGid}). */
let gidSeq = Date.now() * 1_000;

/**
 * A gateway-scoped request id: `SHARD-SEQ`. SEQ is this thread's counter, seeded with the clock
 * in microseconds, so a restarted shard (a new thread, whose counter starts again) never reuses
 * an id its previous incarnation may still have pending in the main thread's table.
 */
export function nextGid(shard: number): string {
  return `${shard}-${++gidSeq}`;
}

/** A new client id: `SHARD.` then 16 url-safe random characters ({@link shardOfClient} parses it). */
export function newClientId(shard: number): string {
  return `${shard}.${randomBytes(12).toString('base64url')}`;
}

/** 32-bit FNV-1a of a string, never 0 (0 means "no key" in the state table's keyed cells). */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  // Final avalanche (murmur3 fmix32): FNV's low bits alone spread short ids poorly.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0 || 1;
}

/**
 * The sticky node of a user over the ready nodes: rendezvous (highest random weight) hashing, so
 * a node joining or leaving moves only the users that hash to it, and every shard agrees without
 * talking. Undefined when no node is ready.
 *
 * @example
 * pickNode('u1', ['n1', 'n2', 'n3']); // the same answer on every shard, every time
 */
export function pickNode(userId: string, ready: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const node of ready) {
    const score = hash32(`${node}\u0000${userId}`) >>> 0;
    if (score > bestScore || (score === bestScore && best !== undefined && node < best)) {
      best = node;
      bestScore = score;
    }
  }
  return best;
}
