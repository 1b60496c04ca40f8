import type { PresenceOp } from './hub-wire.ts';

/** An instance's presence set as read from Redis, with the sequence number it was read at. */
export interface PresenceSnapshot {
  users: string[];
  seq: number;
}

interface Remote {
  users: Set<string>;
  seq: number;
  /** `performance.now()` of the last message or read (an instance not heard of for `deadAfter` may be dropped). */
  seen: number;
  /** Messages that arrived while the set was being read: applied after it, in order. */
  buffered: { seq: number; op: PresenceOp; userId: string }[] | undefined;
}

export interface RemotePresenceOptions {
  /** Reads an instance's whole set and its sequence number (one Redis round trip). */
  fetch(instance: string): Promise<PresenceSnapshot>;
  /** A user's cluster-wide presence may have changed (an instance gained or lost it). */
  changed(userId: string): void;
}

/**
 * The presence of the other instances of one hub listener: each one's set of users online there,
 * kept up to date by the ordered messages of its Lua scripts (`on`/`off` with a sequence number)
 * and read again whole on a gap, a `reset`, or when first heard of. A user is online elsewhere
 * while at least one other instance holds it ({@link has}: a count per user, no scan).
 *
 * @example
 * const rp = new RemotePresence({ fetch, changed: (u) => router.presenceChanged(u) });
 * rp.message('gw-b', 7, 'on', 'u1'); // a gap: gw-b is read again; otherwise applied
 * rp.has('u1');
 */
export class RemotePresence {
  readonly #opts: RemotePresenceOptions;
  readonly #instances = new Map<string, Remote>();
  /** userId -> how many other instances hold it. */
  readonly #count = new Map<string, number>();

  constructor(opts: RemotePresenceOptions) {
    this.#opts = opts;
  }

  /** Online on some other instance. */
  has(userId: string): boolean {
    return this.#count.has(userId);
  }

  /** Users online on other instances. */
  users(): IterableIterator<string> {
    return this.#count.keys();
  }

  knows(instance: string): boolean {
    return this.#instances.has(instance);
  }

  instances(): string[] {
    return [...this.#instances.keys()];
  }

  sizes(): { instances: number; users: number } {
    return { instances: this.#instances.size, users: this.#count.size };
  }

  /** A presence message of `instance`. */
  message(instance: string, seq: number, op: PresenceOp, userId: string): void {
    if (op === 'gone') {
      this.drop(instance);
      return;
    }
    const r = this.#instances.get(instance);
    if (r?.buffered) {
      r.buffered.push({ seq, op, userId });
      return;
    }
    if (!r || op === 'reset' || seq !== r.seq + 1) {
      // Never heard of, rewritten whole, or a message was missed: read the whole set.
      if (!r || seq > r.seq) void this.resync(instance);
      return;
    }
    r.seq = seq;
    r.seen = performance.now();
    if (op === 'on') this.#add(r, userId);
    else this.#remove(r, userId);
  }

  /** Reads `instance`'s whole set again (messages meanwhile are applied after it). */
  async resync(instance: string): Promise<void> {
    let r = this.#instances.get(instance);
    if (r?.buffered) return;
    if (!r) this.#instances.set(instance, (r = { users: new Set(), seq: -1, seen: performance.now(), buffered: undefined }));
    r.buffered = [];
    let snap: PresenceSnapshot;
    try {
      snap = await this.#opts.fetch(instance);
    } catch {
      // Redis went away meanwhile: the next sync reads it again.
      if (this.#instances.get(instance) === r) r.buffered = undefined;
      return;
    }
    if (this.#instances.get(instance) !== r) return;
    const next = new Set(snap.users);
    for (const u of [...r.users]) if (!next.has(u)) this.#remove(r, u);
    for (const u of next) this.#add(r, u);
    r.seq = snap.seq;
    r.seen = performance.now();
    const later = r.buffered.filter((m) => m.seq > snap.seq || m.op === 'reset').sort((a, b) => a.seq - b.seq);
    r.buffered = undefined;
    for (const m of later) this.message(instance, m.seq, m.op, m.userId);
  }

  /** Forgets `instance` (it left, or is dead): its users are offline unless another instance holds them. */
  drop(instance: string): void {
    const r = this.#instances.get(instance);
    if (!r) return;
    this.#instances.delete(instance);
    for (const u of r.users) this.#decrement(u);
  }

  /** Drops every instance that is not live and was not heard of for `deadAfterMs`. */
  prune(live: ReadonlySet<string>, deadAfterMs: number): string[] {
    const now = performance.now();
    const dropped: string[] = [];
    for (const [id, r] of this.#instances) {
      if (live.has(id) || now - r.seen < deadAfterMs) continue;
      this.drop(id);
      dropped.push(id);
    }
    return dropped;
  }

  /** Forgets everything (the hub's cluster link stops); nothing is reported. */
  clear(): void {
    this.#instances.clear();
    this.#count.clear();
  }

  #add(r: Remote, userId: string): void {
    if (r.users.has(userId)) return;
    r.users.add(userId);
    const n = this.#count.get(userId) ?? 0;
    this.#count.set(userId, n + 1);
    if (n === 0) this.#opts.changed(userId);
  }

  #remove(r: Remote, userId: string): void {
    if (!r.users.delete(userId)) return;
    this.#decrement(userId);
  }

  #decrement(userId: string): void {
    const n = (this.#count.get(userId) ?? 1) - 1;
    if (n > 0) {
      this.#count.set(userId, n);
      return;
    }
    this.#count.delete(userId);
    this.#opts.changed(userId);
  }
}
