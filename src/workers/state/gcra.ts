/**
 * The listener's new-connection rate limit: GCRA (the generic cell rate algorithm), a token
 * bucket kept as one theoretical arrival time (TAT) per listener in the table's BigInt64 buffer.
 * One word per listener is what lets every shard apply the same bucket with a single
 * compare-and-swap and no lock.
 */

/**
 * Admits one new connection against the GCRA cell `i` of `big`, exactly across shards.
 * `intervalNs` is 1e9 / perSecond and `burstNs` is burst × intervalNs. A connection is admitted
 * when max(TAT, now) + interval - now <= burst × interval, and TAT moves to max(TAT, now) +
 * interval by compare-and-swap, so racing shards admit exactly `burst` at once (plus what refills
 * meanwhile). TAT 0 (a new or reset slot) is a full bucket. The clock is CLOCK_MONOTONIC
 * (`process.hrtime.bigint()`), the same in every thread of the process.
 *
 * @example
 * const t = BigInt(1e9 / perSecond);
 * if (!gcraAdmit(big, BIG_RATE + slot, t, t * BigInt(burst))) refuse();
 */
export function gcraAdmit(big: BigInt64Array, i: number, intervalNs: bigint, burstNs: bigint): boolean {
  const now = process.hrtime.bigint();
  for (;;) {
    const tat = Atomics.load(big, i);
    const next = (tat > now ? tat : now) + intervalNs;
    if (next - now > burstNs) return false;
    // Another shard moved TAT first: decide again from its value.
    if (Atomics.compareExchange(big, i, tat, next) === tat) return true;
  }
}
