/**
 * One stripe of a listener's per-IP table: a 64-entry open-addressing hash table in shared
 * memory, and the spinlock that guards it. Everything here runs with the lock held, except the
 * lock functions themselves. Kept apart from the table's API so that the invariants every stripe
 * operation must keep (below) are read in one place.
 *
 * Invariants, and why they hold:
 * - Every entry of a key sits between its home and the first free entry (linear probing, no
 *   tombstones): inserts take the first free entry after the home, and a delete shifts later
 *   entries of the run back into the hole (`deleteEntry`).
 * - An entry is live once its key is written: writers store the value first, the key last, so a
 *   thread killed in the middle of a move leaves at most an exact duplicate, which `rebuildStripe`
 *   drops.
 */
import { isMainThread } from 'node:worker_threads';
import { IP_COUNT_MASK, IP_ENTRY_MASK, IP_STRIPE_ENTRIES } from './layout.ts';

/** A stripe lock's owner: shard N is N + 1 (0 is free); the control plane uses its own id. */
export const OWNER_MAIN = 0x10000;
/** The control plane takes a dead shard's lock over after this long (the holder was killed inside it). */
const STEAL_AFTER_MS = 20;

const pause: () => void = (Atomics as unknown as { pause?: () => void }).pause?.bind(Atomics) ?? (() => {});
/**
 * After this many spins a worker thread sleeps 50 µs between tries (`Atomics.wait` with a timeout,
 * no notify needed), leaving the CPU to a holder that was preempted. The main thread (the control
 * plane, or the shard with `workers: 0`) never waits: it only spins.
 */
const SPINS_BEFORE_SLEEP = 256;
const canSleep = !isMainThread;

/**
 * Takes the stripe lock at index `lock` of `a` for `owner` (a shard's index + 1), waiting at most
 * `waitMs`; false when it could not be had in time.
 *
 * @example
 * if (lockStripe(a, lock, shard + 1, 100)) try { ... } finally { Atomics.store(a, lock, 0); }
 */
export function lockStripe(a: Int32Array, lock: number, owner: number, waitMs: number): boolean {
  if (Atomics.compareExchange(a, lock, 0, owner) === 0) return true;
  if (waitMs <= 0) return false;
  const until = performance.now() + waitMs;
  for (let n = 1; ; n++) {
    const held = Atomics.load(a, lock);
    if (held === 0) {
      if (Atomics.compareExchange(a, lock, 0, owner) === 0) return true;
    } else if (canSleep && n > SPINS_BEFORE_SLEEP) Atomics.wait(a, lock, held, 0.05);
    else pause();
    if ((n & 255) === 0 && performance.now() > until) return false;
  }
}

/**
 * Control plane: takes the stripe lock at `lock` for {@link OWNER_MAIN}, or takes it over from
 * `dead` (a shard's index + 1 whose thread is gone) once it has held it for longer than a live
 * holder ever does. Answers 1 when it got the lock, 2 when it took it over, 0 when another owner
 * kept it for `giveUpMs` (a preempted shard, or another dead one not handled yet).
 *
 * @example
 * const took = lockOrSteal(a, lock, shard + 1, 100);
 */
export function lockOrSteal(a: Int32Array, lock: number, dead: number, giveUpMs: number): 0 | 1 | 2 {
  if (Atomics.compareExchange(a, lock, 0, OWNER_MAIN) === 0) return 1;
  const start = performance.now();
  for (let n = 1; ; n++) {
    pause();
    const held = Atomics.load(a, lock);
    if (held === 0 && Atomics.compareExchange(a, lock, 0, OWNER_MAIN) === 0) return 1;
    if ((n & 1023) !== 0) continue;
    const waited = performance.now() - start;
    if (held === dead && waited > STEAL_AFTER_MS && Atomics.compareExchange(a, lock, dead, OWNER_MAIN) === dead) return 2;
    if (waited > giveUpMs) return 0;
  }
}

/**
 * Deletes entry `i` of the stripe at `e0` (lock held) by backward shift: later entries of the
 * probe run move back into the hole, so lookups never need tombstones and nothing grows under
 * churn. Each move writes the value, then the key, then frees the old place: an interrupted move
 * leaves an exact duplicate at worst.
 *
 * @example
 * deleteEntry(a, e0, i); // entry i's count reached 0
 */
export function deleteEntry(a: Int32Array, e0: number, i: number): void {
  Atomics.store(a, e0 + 2 * i, 0);
  for (let j = (i + 1) & IP_ENTRY_MASK; j !== i; j = (j + 1) & IP_ENTRY_MASK) {
    const k = Atomics.load(a, e0 + 2 * j);
    if (k === 0) return;
    const home = (k >>> 8) & IP_ENTRY_MASK;
    // The entry stays when its home lies cyclically in (i, j].
    if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
    Atomics.store(a, e0 + 2 * i + 1, Atomics.load(a, e0 + 2 * j + 1));
    Atomics.store(a, e0 + 2 * i, k);
    Atomics.store(a, e0 + 2 * j, 0);
    i = j;
  }
}

/**
 * Rebuilds the stripe at `e0` (lock held) without `shard`'s entries and without duplicates;
 * returns the places dropped.
 *
 * @example
 * freed += rebuildStripe(a, e0, deadShard);
 */
export function rebuildStripe(a: Int32Array, e0: number, shard: number): number {
  const keep: number[] = [];
  let dropped = 0;
  for (let i = 0; i < IP_STRIPE_ENTRIES; i++) {
    const k = Atomics.load(a, e0 + 2 * i);
    const v = Atomics.load(a, e0 + 2 * i + 1);
    Atomics.store(a, e0 + 2 * i, 0);
    Atomics.store(a, e0 + 2 * i + 1, 0);
    if (k === 0) continue;
    let dup = false;
    for (let j = 0; j < keep.length && !dup; j += 2) dup = keep[j] === k && keep[j + 1]! >>> 24 === v >>> 24;
    if (dup) continue;
    if (v >>> 24 === shard) dropped += v & IP_COUNT_MASK;
    else keep.push(k, v);
  }
  for (let j = 0; j < keep.length; j += 2) {
    let i = (keep[j]! >>> 8) & IP_ENTRY_MASK;
    while (Atomics.load(a, e0 + 2 * i) !== 0) i = (i + 1) & IP_ENTRY_MASK;
    Atomics.store(a, e0 + 2 * i + 1, keep[j + 1]!);
    Atomics.store(a, e0 + 2 * i, keep[j]!);
  }
  return dropped;
}

/**
 * Gives one place of `shard` for `key` back in the stripe at `e0` (lock held): the entry's count
 * drops by one, and an entry that reaches 0 is deleted. False when the shard holds no place for
 * the key there.
 *
 * @example
 * releaseInStripe(a, e0, key, shard);
 */
export function releaseInStripe(a: Int32Array, e0: number, key: number, shard: number): boolean {
  for (let n = 0, i = (key >>> 8) & IP_ENTRY_MASK; n < IP_STRIPE_ENTRIES; n++, i = (i + 1) & IP_ENTRY_MASK) {
    const k = Atomics.load(a, e0 + 2 * i);
    if (k === 0) return false;
    if (k !== key) continue;
    const v = Atomics.load(a, e0 + 2 * i + 1);
    if (v >>> 24 !== shard) continue;
    if ((v & IP_COUNT_MASK) > 1) Atomics.store(a, e0 + 2 * i + 1, v - 1);
    else deleteEntry(a, e0, i);
    return true;
  }
  return false;
}
