import type { Actor } from './actor.ts';

/** An index extracts zero or more keys from an entry (a client has one user, a connection one backend). */
export type IndexFn<V> = (value: V) => string | readonly string[] | undefined;

const NO_KEYS: ReadonlyMap<string, string[]> = new Map();
const noop = (): void => {};

interface Entry<V> {
  actor: Actor;
  value: V;
  keys: ReadonlyMap<string, string[]>;
  demonitor: () => void;
  /** Its place in the registry's dense entry list. */
  ix: number;
}

export interface RegistryOptions {
  /**
   * Keep a map by actor id (default true): `get`/`has` in constant time and a registered id
   * replacing the entry it names. Without it (a listener's connections, whose ids are unique by
   * construction), `get`/`has` scan the entries and an id is not checked for a duplicate.
   */
  byId?: boolean;
}

/**
 * A map with several indexes whose entries leave every index together, on the DOWN of their
 * actor. This is the one mechanism that prevents the classic leak where one map is cleaned and its
 * twin is not: nothing in Gatehouse deletes from an index by hand.
 *
 * Invariant: an entry is in `byId` iff its actor is live and registered, and then it is in every
 * index under exactly the keys its index functions returned at registration.
 *
 * @example
 * const clients = new Registry<ClientInfo>('hub-clients', { user: (c) => c.userId });
 * clients.register(actor, { userId: 'u1' });
 * clients.lookup('user', 'u1'); // [ { actor, value } ]
 * // when `actor` stops, it is gone from byId and from the user index.
 *
 * The entries live in a dense array (removal moves the last entry into the hole), not in a JS
 * Map: a long-lived Map or Set with an insert and a delete per connection keeps every object it
 * ever held alive through scavenges until the next full GC (V8 leaves the entries of a table it
 * rehashed in place, and links it to its successor), which made every connection's objects
 * survive and be promoted. Iteration order is therefore not registration order.
 */
export class Registry<V = undefined> {
  readonly name: string;
  readonly #entries: Entry<V>[] = [];
  readonly #byId: Map<string, Entry<V>> | undefined;
  readonly #indexes = new Map<string, { fn: IndexFn<V>; map: Map<string, Set<Entry<V>>> }>();

  constructor(name: string, indexes: Record<string, IndexFn<V>> = {}, opts: RegistryOptions = {}) {
    this.name = name;
    this.#byId = opts.byId === false ? undefined : new Map();
    for (const [k, fn] of Object.entries(indexes)) this.#indexes.set(k, { fn, map: new Map() });
  }

  /**
   * Registers a live actor. Registering an id that is present replaces the old entry (its actor
   * is no longer watched by this registry). An actor that already exited is not registered.
   * Returns false in that case.
   */
  register(actor: Actor, value: V): boolean {
    if (actor.status === 'exited') return false;
    // Every key is computed before anything changes: an index function that throws leaves the
    // registry as it was, never an entry in some indexes and not in byId (which nothing would clean).
    // A registry with no secondary index (a listener's connections) shares one empty key map:
    // nothing per entry beyond the entry itself, on the accept path.
    let keys: ReadonlyMap<string, string[]> = NO_KEYS;
    if (this.#indexes.size > 0) {
      const m = new Map<string, string[]>();
      for (const [name, idx] of this.#indexes) {
        const raw = idx.fn(value);
        if (raw === undefined) continue;
        m.set(name, typeof raw === 'string' ? [raw] : [...new Set(raw)]);
      }
      keys = m;
    }
    const old = this.#byId?.get(actor.id);
    if (old) {
      old.demonitor();
      this.#remove(old);
    }
    const entry: Entry<V> = { actor, value, keys, demonitor: noop, ix: this.#entries.length };
    for (const [name, ks] of keys) {
      const map = this.#indexes.get(name)!.map;
      for (const k of ks) {
        let set = map.get(k);
        if (!set) map.set(k, (set = new Set()));
        set.add(entry);
      }
    }
    this.#entries.push(entry);
    this.#byId?.set(actor.id, entry);
    entry.demonitor = actor.monitor(() => {
      if (this.#entries[entry.ix] === entry) this.#remove(entry);
    });
    return true;
  }

  /** Removes an entry without waiting for its actor's DOWN (the actor stays alive). */
  unregister(id: string): boolean {
    const e = this.#find(id);
    if (!e) return false;
    e.demonitor();
    this.#remove(e);
    return true;
  }

  #find(id: string): Entry<V> | undefined {
    if (this.#byId !== undefined) return this.#byId.get(id);
    for (const e of this.#entries) if (e.actor.id === id) return e;
    return undefined;
  }

  #remove(e: Entry<V>): void {
    const list = this.#entries;
    const last = list.pop()!;
    if (last !== e) {
      list[e.ix] = last;
      last.ix = e.ix;
    }
    e.ix = -1;
    this.#byId?.delete(e.actor.id);
    for (const [name, keys] of e.keys) {
      const map = this.#indexes.get(name)!.map;
      for (const k of keys) {
        const set = map.get(k);
        if (!set) continue;
        set.delete(e);
        if (set.size === 0) map.delete(k);
      }
    }
  }

  get(id: string): { actor: Actor; value: V } | undefined {
    const e = this.#find(id);
    return e && { actor: e.actor, value: e.value };
  }

  has(id: string): boolean {
    return this.#find(id) !== undefined;
  }

  /** Entries under `key` in index `index`. */
  lookup(index: string, key: string): { actor: Actor; value: V }[] {
    const set = this.#indexFor(index).get(key);
    return set ? [...set].map((e) => ({ actor: e.actor, value: e.value })) : [];
  }

  /** How many entries are under `key` in `index`. */
  count(index: string, key: string): number {
    return this.#indexFor(index).get(key)?.size ?? 0;
  }

  /** The keys present in `index`. */
  keys(index: string): string[] {
    return [...this.#indexFor(index).keys()];
  }

  get size(): number {
    return this.#entries.length;
  }

  /** The number of entries (`byId`) and of keys in every index: all zero when empty. */
  sizes(): Record<string, number> {
    const out: Record<string, number> = { byId: this.#entries.length };
    for (const [name, idx] of this.#indexes) out[name] = idx.map.size;
    return out;
  }

  /** Calls `fn` with every entry's value, allocating nothing per entry (fan-out paths). */
  forEach(fn: (value: V, actor: Actor) => void): void {
    // Over a copy: `fn` may make entries leave (a DOWN), which moves others in the list.
    for (const e of this.#entries.slice()) if (e.ix >= 0) fn(e.value, e.actor);
  }

  /** Calls `fn` with the value of every entry under `key` in `index`. */
  forEachIn(index: string, key: string, fn: (value: V, actor: Actor) => void): void {
    const set = this.#indexFor(index).get(key);
    if (set) for (const e of set) fn(e.value, e.actor);
  }

  /** The entries present now (those that leave during the iteration are skipped). */
  *values(): IterableIterator<{ actor: Actor; value: V }> {
    for (const e of this.#entries.slice()) if (e.ix >= 0) yield { actor: e.actor, value: e.value };
  }

  #indexFor(index: string): Map<string, Set<Entry<V>>> {
    const idx = this.#indexes.get(index);
    if (!idx) throw new RangeError(`registry ${this.name} has no index ${index}`);
    return idx.map;
  }
}
