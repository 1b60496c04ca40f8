import { shardOfClient } from '../hub/messages.ts';

/** An admitted client that has not said `hub-client-up` within this is taken back (its handshake failed). */
export const ADMIT_PENDING_MS = 10_000;

export interface HubCapsOptions {
  /**
   * Runs the atomic check-and-count in Redis: true admitted (counted), false refused, undefined
   * when Redis could not answer (the local cap alone decides: admitted, not counted there).
   */
  admit(userId: string): Promise<boolean | undefined>;
  /** Adds `delta` to this instance's count of `userId` in Redis (best effort). */
  add(userId: string, delta: number): void;
}

/**
 * This instance's share of `maxClientsPerUser` across instances, for one hub listener. Redis holds
 * a count per user per instance (a hash per instance, with a TTL, so a dead instance's share
 * expires with it); the check and the count are one Lua step over the live instances' hashes.
 * Here are the clients this instance counted: admitted (`pending`, until their `hub-client-up`,
 * or taken back after {@link ADMIT_PENDING_MS}) and registered (`held`, until they are gone).
 * {@link counts} gives the whole share, written again when Redis comes back.
 *
 * @example
 * if (await caps.admit('0.abc', 'u1')) upgrade(); // counted across instances
 * caps.up('0.abc', 'u1'); caps.gone('0.abc');    // the count follows the client
 */
export class HubCaps {
  readonly #opts: HubCapsOptions;
  readonly #pending = new Map<string, { userId: string; timer: NodeJS.Timeout }>();
  readonly #held = new Map<string, string>();

  constructor(opts: HubCapsOptions) {
    this.#opts = opts;
  }

  /** A client of `userId` asks to be admitted: false when the user has its cap across instances. */
  async admit(clientId: string, userId: string): Promise<boolean> {
    const r = await this.#opts.admit(userId);
    if (r === false) return false;
    // Counted in Redis or not, the client is counted here: Redis' share is written again from this.
    const timer = setTimeout(() => {
      if (this.#pending.get(clientId)?.timer !== timer) return;
      this.#pending.delete(clientId);
      this.#opts.add(userId, -1);
    }, ADMIT_PENDING_MS);
    this.#pending.set(clientId, { userId, timer });
    return true;
  }

  /** A client is registered (`hub-client-up`). One admitted without asking (a restarted presence re-announcing, cluster off then) is counted now. */
  up(clientId: string, userId: string): void {
    const p = this.#pending.get(clientId);
    if (p) {
      clearTimeout(p.timer);
      this.#pending.delete(clientId);
      this.#held.set(clientId, userId);
      return;
    }
    if (this.#held.has(clientId)) return;
    this.#held.set(clientId, userId);
    this.#opts.add(userId, 1);
  }

  /** A client is gone: its place is given back. */
  gone(clientId: string): void {
    const userId = this.#held.get(clientId);
    if (userId === undefined) return;
    this.#held.delete(clientId);
    this.#opts.add(userId, -1);
  }

  /** A shard went down: its clients' places are given back. */
  shardDown(shard: number): void {
    for (const clientId of [...this.#held.keys()]) if (shardOfClient(clientId) === shard) this.gone(clientId);
  }

  /** This instance's clients per user (admitted and registered): its whole share. */
  counts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const userId of this.#held.values()) out.set(userId, (out.get(userId) ?? 0) + 1);
    for (const { userId } of this.#pending.values()) out.set(userId, (out.get(userId) ?? 0) + 1);
    return out;
  }

  sizes(): { held: number; pending: number } {
    return { held: this.#held.size, pending: this.#pending.size };
  }

  /** Every timer cleared, every map emptied. */
  clear(): void {
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    this.#held.clear();
  }
}
