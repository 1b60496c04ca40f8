/**
 * Which row of the state table belongs to which listener or backend. Rows are given out by name in
 * the main thread and shipped to shards in their config, so a name maps to the same row in every
 * thread and keeps it across reloads. The allocator never touches the shared buffers itself: the
 * caller passes how to zero a row and how to tell that nothing counts on it any more.
 */

/**
 * Gives out stable table rows by name (main thread). A name keeps its slot across reloads;
 * a released slot is zeroed before it is reused.
 *
 * @example
 * const slots = new SlotAllocator(MAX_LISTENERS, (s) => table.resetListener(s), (s) => table.listenerActiveAll(s) === 0);
 * const slot = slots.get('tcp-in');
 * slots.retain(['tcp-in']); // after a reload: every other name is retired
 */
export class SlotAllocator {
  readonly #slots = new Map<string, number>();
  /**
   * Rows whose name left the config while something still counts on them (a removed backend's or
   * listener's connections finish after the reload). They go back to the free list only once idle:
   * handing a busy row to a new name would let the old connections' ends count the new one down.
   */
  readonly #retired = new Map<number, string>();
  readonly #free: number[] = [];
  #next = 0;
  readonly #max: number;
  readonly #onReuse: (slot: number) => void;
  readonly #idle: (slot: number) => boolean;

  /**
   * @param onReuse resets a row before it is given to a new name.
   * @param idle whether a retired row has nothing counting on it any more (default: always).
   */
  constructor(max: number, onReuse: (slot: number) => void, idle: (slot: number) => boolean = () => true) {
    this.#max = max;
    this.#onReuse = onReuse;
    this.#idle = idle;
  }

  /** The row of `name`, given out now if it has none. Throws a `RangeError` when every row is taken. */
  get(name: string): number {
    let s = this.#slots.get(name);
    if (s !== undefined) return s;
    // A name that comes back while its row is retired gets its row back, counts and all.
    for (const [slot, n] of this.#retired) {
      if (n !== name) continue;
      this.#retired.delete(slot);
      this.#slots.set(name, slot);
      return slot;
    }
    this.#sweep();
    if (this.#free.length > 0) {
      s = this.#free.shift()!;
      this.#onReuse(s);
    } else {
      if (this.#next >= this.#max) throw new RangeError(`state table full: more than ${this.#max} slots (${this.#retired.size} still draining)`);
      s = this.#next++;
    }
    this.#slots.set(name, s);
    return s;
  }

  /** Retires every name not in `keep`; its row is freed once idle. */
  retain(keep: Iterable<string>): void {
    const k = new Set(keep);
    for (const [name, slot] of this.#slots) {
      if (!k.has(name)) {
        this.#slots.delete(name);
        this.#retired.set(slot, name);
      }
    }
    this.#sweep();
  }

  /** Frees the retired rows that became idle. */
  #sweep(): void {
    for (const slot of this.#retired.keys()) {
      if (!this.#idle(slot)) continue;
      this.#retired.delete(slot);
      this.#free.push(slot);
    }
  }

  /** The names in the config and their rows. */
  entries(): [string, number][] {
    return [...this.#slots];
  }

  /** Every row in use: the config's and the retired ones still draining. */
  used(): number[] {
    return [...this.#slots.values(), ...this.#retired.keys()];
  }

  /** How many retired rows are still draining. */
  get retired(): number {
    this.#sweep();
    return this.#retired.size;
  }
}
