import type { Logger } from 'pino';
import { setup } from 'xstate';
import type { Actor } from '../runtime/actor.ts';
import { TableActor, tableLifecycle } from './table-base.ts';

/** The states of {@link presenceMachine}. */
export type PresenceState = 'starting' | 'settling' | 'running' | 'stopping' | 'stopped';
/** The events of {@link presenceMachine}, owned by the presence actor. */
export type PresenceEvent = 'presence.start' | 'presence.resync' | 'presence.settled' | 'presence.stop' | 'presence.stopped';

/**
 * The life of a presence actor. A first start goes straight to `running`; a restart that still
 * has users the nodes were told are online goes through `settling` (the shards re-announce their
 * clients; who is not re-announced in time is reported offline, then `running`). Any stop, kill
 * or crash goes `stopping` (timers cleared, maps emptied, nothing announced) then `stopped`.
 *
 * @example
 * compile(presenceMachine).next('settling', 'presence.settled'); // 'running'
 */
export const presenceMachine = setup({ types: { events: {} as { type: PresenceEvent } } }).createMachine({
  id: 'presence',
  initial: 'starting',
  states: {
    starting: { on: { 'presence.start': 'running', 'presence.resync': 'settling', 'presence.stop': 'stopping' } },
    settling: { on: { 'presence.settled': 'running', 'presence.stop': 'stopping' } },
    running: { on: { 'presence.stop': 'stopping' } },
    stopping: { on: { 'presence.stopped': 'stopped' } },
    stopped: { type: 'final' },
  },
});
const lifecycle = tableLifecycle<PresenceState, PresenceEvent>(presenceMachine, 'presence.stop', 'presence.stopped');

export interface PresenceOptions {
  /** The actor id given by the supervisor (`presence:LISTENER`). */
  id: string;
  listener: string;
  /** `presenceGrace`, read when a grace starts (a reload applies to the next one). */
  graceMs: () => number;
  /** A user came online (its first client, and it was not in its grace). */
  onOnline: (userId: string) => void;
  /** A user went offline (its grace passed with no new client). */
  onOffline: (userId: string) => void;
  /** A client is gone (`hub-client-down`, or its shard went down). */
  onClientGone: (clientId: string, userId: string) => void;
  log: Logger;
  parent?: Actor;
  /**
   * After a restart: the users the nodes were told are online. Those that no shard re-announces
   * within `settleMs` (their last client left while presence was down) are reported offline.
   */
  previouslyOnline?: readonly string[];
  settleMs?: number;
}

interface UserEntry {
  /** clientId -> shard. */
  clients: Map<string, number>;
  /** The grace timer, while the user has no client left but is still online. */
  grace: NodeJS.Timeout | undefined;
}

/**
 * Presence across shards for one hub listener (`presence:LISTENER`, type `presence`): which
 * clients are registered on which shard, and which users are online. Its state is
 * {@link presenceMachine}'s; it takes clients while `settling` and `running`.
 *
 * - A user is online from its first client's `hub-client-up`, on any shard.
 * - When its last client is gone, a grace of `presenceGrace` starts; a new client within it
 *   cancels it (a page reload produces no offline/online flap); when it passes, the user is
 *   offline. One timer per user in grace.
 * - A shard that goes down takes all its clients at once: `client-gone` for each, then presence
 *   as above.
 *
 * Maps: clients (clientId -> user, shard), users (userId -> its clients and grace timer), shards
 * (shard -> its clientIds). Every path that removes a client removes it from all three, and an
 * empty user or shard entry is deleted with its last client (or when its grace ends). The sizes
 * are in `describe()`, so `/actors` shows them. On exit every timer is cleared and every map
 * emptied.
 *
 * @example
 * presence.clientUp(0, '0.abc', 'u1'); // onOnline('u1')
 * presence.clientDown('0.abc');        // onClientGone('0.abc', 'u1'); onOffline('u1') after the grace
 */
export class PresenceActor extends TableActor<PresenceState, PresenceEvent> {
  readonly listener: string;
  readonly #opts: PresenceOptions;
  readonly #clients = new Map<string, { userId: string; shard: number }>();
  readonly #users = new Map<string, UserEntry>();
  readonly #byShard = new Map<number, Set<string>>();
  #inGrace = 0;
  #settle: NodeJS.Timeout | undefined;

  constructor(opts: PresenceOptions) {
    super(opts.id, 'presence', opts.parent, lifecycle);
    this.#opts = opts;
    this.listener = opts.listener;
  }

  start(): this {
    const prev = this.#opts.previouslyOnline;
    if (prev && prev.length > 0) {
      this.step('presence.resync');
      this.#settle = setTimeout(() => {
        this.#settle = undefined;
        for (const userId of prev) if (!this.#users.has(userId)) this.#opts.onOffline(userId);
        this.step('presence.settled');
      }, this.#opts.settleMs ?? 1_000);
    } else this.step('presence.start');
    this.markRunning();
    return this;
  }

  /** It takes clients while settling (the shards' re-announcements) and running. */
  get #live(): boolean {
    return this.state === 'running' || this.state === 'settling';
  }

  /** Registered clients. */
  get clients(): number {
    return this.#clients.size;
  }

  /** Online users: those with a client, and those in their grace. */
  get usersOnline(): number {
    return this.#users.size;
  }

  /** Users online now (for a node stream that just said hello). */
  onlineUsers(): IterableIterator<string> {
    return this.#users.keys();
  }

  isOnline(userId: string): boolean {
    return this.#users.has(userId);
  }

  hasClient(clientId: string): boolean {
    return this.#clients.has(clientId);
  }

  /** The shards holding at least one client of the user (empty when it has none). */
  shardsOfUser(userId: string): Set<number> {
    const out = new Set<number>();
    const u = this.#users.get(userId);
    if (u) for (const shard of u.clients.values()) out.add(shard);
    return out;
  }

  /** A client got its `welcome` on `shard`. */
  clientUp(shard: number, clientId: string, userId: string): void {
    if (!this.#live) return;
    const known = this.#clients.get(clientId);
    // The same id again (a bug elsewhere): keep one entry, under the latest user and shard.
    if (known) this.#forget(clientId, known);
    this.#clients.set(clientId, { userId, shard });
    let s = this.#byShard.get(shard);
    if (!s) this.#byShard.set(shard, (s = new Set()));
    s.add(clientId);
    let u = this.#users.get(userId);
    const wasOnline = u !== undefined;
    if (!u) this.#users.set(userId, (u = { clients: new Map(), grace: undefined }));
    if (u.grace) {
      clearTimeout(u.grace);
      u.grace = undefined;
      this.#inGrace--;
    }
    u.clients.set(clientId, shard);
    if (!wasOnline) this.#opts.onOnline(userId);
    if (known && known.userId !== userId) this.#afterLastClient(known.userId);
  }

  /** A client is gone. False when it was not registered (already gone with its shard). */
  clientDown(clientId: string): boolean {
    const c = this.#clients.get(clientId);
    if (!c) return false;
    this.#forget(clientId, c);
    this.#opts.onClientGone(clientId, c.userId);
    this.#afterLastClient(c.userId);
    return true;
  }

  /** A shard went down: all its clients are gone at once. Returns how many. */
  shardDown(shard: number): number {
    const ids = this.#byShard.get(shard);
    if (!ids) return 0;
    this.#byShard.delete(shard);
    const users = new Set<string>();
    let n = 0;
    for (const clientId of ids) {
      const c = this.#clients.get(clientId);
      if (!c) continue;
      this.#forget(clientId, c);
      users.add(c.userId);
      n++;
      this.#opts.onClientGone(clientId, c.userId);
    }
    // Presence is computed once every client of the shard is gone.
    for (const userId of users) this.#afterLastClient(userId);
    return n;
  }

  #forget(clientId: string, c: { userId: string; shard: number }): void {
    this.#clients.delete(clientId);
    const s = this.#byShard.get(c.shard);
    if (s) {
      s.delete(clientId);
      if (s.size === 0) this.#byShard.delete(c.shard);
    }
    this.#users.get(c.userId)?.clients.delete(clientId);
  }

  /** The user's last client may be gone: start its grace (or go offline at once with no grace). */
  #afterLastClient(userId: string): void {
    const u = this.#users.get(userId);
    if (!u || u.clients.size > 0 || u.grace) return;
    const graceMs = this.#opts.graceMs();
    if (graceMs <= 0 || !this.#live) {
      this.#offline(userId);
      return;
    }
    this.#inGrace++;
    u.grace = setTimeout(() => {
      u.grace = undefined;
      this.#inGrace--;
      if (u.clients.size === 0 && this.#users.get(userId) === u) this.#offline(userId);
    }, graceMs);
  }

  #offline(userId: string): void {
    this.#users.delete(userId);
    if (this.#live) this.#opts.onOffline(userId);
  }

  override describe(): Record<string, unknown> {
    return { clients: this.#clients.size, users: this.#users.size, inGrace: this.#inGrace, shards: this.#byShard.size };
  }

  /** Map sizes, for tests and the hub view. */
  sizes(): { clients: number; users: number; inGrace: number; shards: number } {
    return { clients: this.#clients.size, users: this.#users.size, inGrace: this.#inGrace, shards: this.#byShard.size };
  }

  /** Fault injection (debug mode): fails as a bug would; its supervisor restarts it and the shards re-announce their clients. */
  crash(err: unknown): boolean {
    this.exit('error', err);
    return true;
  }

  /** Every timer cleared and every map emptied; nothing is announced on the way out. */
  protected release(): void {
    clearTimeout(this.#settle);
    this.#settle = undefined;
    for (const u of this.#users.values()) if (u.grace) clearTimeout(u.grace);
    this.#users.clear();
    this.#clients.clear();
    this.#byShard.clear();
    this.#inGrace = 0;
  }
}
