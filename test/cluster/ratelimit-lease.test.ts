import { describe, expect, test } from 'vitest';
import { ADMITTED, ASK, LEASE, WANT_STALE_NS, leaseAvailable, leaseGrant, leaseTake, leaseWaitMs } from '../../src/workers/state/lease.ts';
import { leaseSize } from '../../src/cluster/ratelimit-shard.ts';

const MS = 1_000_000n;
/** A lease at cell 0 of its own buffer; the clock starts well past 0 (zeroed memory is "long ago"). */
const fresh = () => new BigInt64Array(8);
const T0 = 1_000_000n * MS;

describe('rate-limit leases in the state table (cluster mode)', () => {
  test('lease size: 5% of perSecond, at least 1, at most burst', () => {
    expect(leaseSize(50_000_000n, 20)).toBe(1); // 20/s
    expect(leaseSize(1_000_000n, 2_000)).toBe(50); // 1000/s
    expect(leaseSize(100_000n, 100)).toBe(100); // 10000/s, burst 100
    expect(leaseSize(10n ** 12n, 1)).toBe(1); // one every 1000 s
  });

  test('an empty lease admits once on credit and asks; one ask in flight; the grant pays the credit back', () => {
    const big = fresh();
    expect(leaseTake(big, 0, 1, T0)).toBe(ADMITTED | ASK);
    expect(leaseAvailable(big, 0, T0)).toBe(-1);
    // In debt by a whole lease: refused; the ask is already in flight, so no second one.
    expect(leaseTake(big, 0, 1, T0)).toBe(0);
    // Redis granted 2 (the debt and a lease): one token to spend, and a new ask when it goes.
    leaseGrant(big, 0, 2, 0n, 100n * MS, T0);
    expect(leaseAvailable(big, 0, T0)).toBe(1);
    expect(leaseTake(big, 0, 1, T0)).toBe(ADMITTED | ASK);
    // A larger lease asks only once it is half spent.
    const big2 = fresh();
    leaseGrant(big2, 0, 10, 0n, 100n * MS, T0);
    const got = Array.from({ length: 10 }, () => leaseTake(big2, 0, 10, T0));
    expect(got.filter((r) => r & ADMITTED)).toHaveLength(10);
    expect(got.findIndex((r) => r & ASK)).toBe(4);
    expect(got.filter((r) => r & ASK)).toHaveLength(1);
  });

  test('a dry bucket refuses without credit or asks until the next token is due, then lends again', () => {
    const big = fresh();
    leaseGrant(big, 0, 0, 50n * MS, 100n * MS, T0);
    expect(leaseTake(big, 0, 1, T0)).toBe(0);
    expect(leaseTake(big, 0, 1, T0 + 49n * MS)).toBe(0);
    expect(leaseWaitMs(big, 0, 50n * MS, T0 + 20n * MS)).toBe(30);
    expect(leaseTake(big, 0, 1, T0 + 51n * MS)).toBe(ADMITTED | ASK);
  });

  test('leased tokens expire with the lease: a quiet instance does not hoard them; debt does not expire', () => {
    const big = fresh();
    leaseGrant(big, 0, 5, 0n, 100n * MS, T0);
    expect(leaseAvailable(big, 0, T0 + 99n * MS)).toBe(5);
    expect(leaseAvailable(big, 0, T0 + 101n * MS)).toBe(0);
    expect(leaseTake(big, 0, 5, T0 + 101n * MS)).toBe(ADMITTED | ASK);
    expect(leaseAvailable(big, 0, T0 + 10_000n * MS)).toBe(-1);
  });

  test('an ask never answered is taken over after WANT_STALE_NS', () => {
    const big = fresh();
    expect(leaseTake(big, 0, 1, T0)).toBe(ADMITTED | ASK);
    expect(leaseTake(big, 0, 1, T0 + WANT_STALE_NS - 1n)).toBe(0);
    expect(leaseTake(big, 0, 1, T0 + WANT_STALE_NS)).toBe(ASK);
    expect(Atomics.load(big, LEASE.WANT)).toBe(T0 + WANT_STALE_NS);
  });

  test('instances spending leases of one GCRA bucket admit at most burst + rate × time + 2 leases each', () => {
    // A model of the cluster: the Lua script's GCRA on a virtual clock, asks answered after a
    // round trip, arrivals at random instances. The bound must hold at every step.
    for (const [perSecond, burst, instances] of [[20, 20, 3], [1000, 100, 5], [5, 1, 2]] as const) {
      const interval = BigInt(1e9 / perSecond);
      const lease = leaseSize(interval, burst);
      const leases = Array.from({ length: instances }, fresh);
      let tat = 0n;
      const redis = (now: bigint, want: number): [number, bigint] => {
        if (tat < now) tat = now;
        let g = Number((now + BigInt(burst) * interval - tat) / interval);
        g = Math.max(0, Math.min(g, want));
        tat += BigInt(g) * interval;
        return [g, g < want ? tat + interval - BigInt(burst) * interval - now : 0n];
      };
      const inFlight: { at: bigint; i: number }[] = [];
      const rtt = 1n * MS;
      let seed = 7;
      const rand = (): number => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x80000000);
      let admitted = 0;
      let now = T0;
      for (let step = 0; step < 20_000; step++) {
        now += BigInt(Math.floor(rand() * Number(interval) / 4));
        for (const f of inFlight.filter((x) => x.at <= now)) {
          inFlight.splice(inFlight.indexOf(f), 1);
          const want = Math.max(1, lease - leaseAvailable(leases[f.i]!, 0, now));
          const [g, wait] = redis(now, want);
          leaseGrant(leases[f.i]!, 0, g, wait, interval * BigInt(lease) > 100n * MS ? interval * BigInt(lease) : 100n * MS, now);
        }
        const i = Math.floor(rand() * instances);
        const r = leaseTake(leases[i]!, 0, lease, now);
        if (r & ASK) inFlight.push({ at: now + rtt, i });
        if (r & ADMITTED) admitted++;
        const bound = burst + Number((now - T0) / interval) + 1 + 2 * lease * instances;
        if (admitted > bound) expect.fail(`${admitted} admitted > ${bound} at step ${step} (${perSecond}/s, burst ${burst}, ${instances} instances)`);
      }
      // And the limit is used, not starved: most of what the bucket allowed was admitted.
      const allowed = burst + Number((now - T0) / interval);
      expect(admitted).toBeGreaterThan(allowed * 0.8);
    }
  });
});
