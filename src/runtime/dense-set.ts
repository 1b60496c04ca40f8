/**
 * A set of objects kept in a dense array, each member's place stored on the member under a
 * symbol of this set: add, delete and has in constant time without a hash table.
 *
 * Why not a `Set`: a long-lived JS `Set` or `Map` with one insert and one delete per connection
 * keeps every object it ever held alive through V8's young-generation collections until the
 * next full GC (V8 leaves the entries of a table it rehashed in place and links that table to
 * its successor), so every connection's objects get promoted. Use this (or an index field, as
 * the live set and the Registry do) for membership that churns with connections.
 *
 * Iteration order is not insertion order (a delete moves the last member into the hole);
 * `values()` returns a copy, so members may leave while the caller walks it.
 *
 * @example
 * const arriving = new DenseSet<net.Socket>();
 * arriving.add(socket);
 * socket.once('close', () => arriving.delete(socket));
 */
export class DenseSet<T extends object> {
  readonly #items: T[] = [];
  readonly #key = Symbol('dense-set.index');

  get size(): number {
    return this.#items.length;
  }

  #at(x: T): number {
    const i = (x as Record<symbol, number | undefined>)[this.#key];
    return i !== undefined && i >= 0 && this.#items[i] === x ? i : -1;
  }

  has(x: T): boolean {
    return this.#at(x) >= 0;
  }

  /** Adds `x`; false when it was there already. */
  add(x: T): boolean {
    if (this.#at(x) >= 0) return false;
    (x as Record<symbol, number>)[this.#key] = this.#items.length;
    this.#items.push(x);
    return true;
  }

  /** Removes `x`; false when it was not there. */
  delete(x: T): boolean {
    const i = this.#at(x);
    if (i < 0) return false;
    const items = this.#items;
    const last = items.pop()!;
    if (last !== x) {
      items[i] = last;
      (last as Record<symbol, number>)[this.#key] = i;
    }
    (x as Record<symbol, number>)[this.#key] = -1;
    return true;
  }

  clear(): void {
    for (const x of this.#items) (x as Record<symbol, number>)[this.#key] = -1;
    this.#items.length = 0;
  }

  /** The members now, as a copy. */
  values(): T[] {
    return this.#items.slice();
  }
}
