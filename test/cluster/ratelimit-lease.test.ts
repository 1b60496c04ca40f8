import { describe, expect, test } from 'vitest';
import { ADMITTED, ASK, LEASE, WANT_STALE_MS, leaseAvailable, leaseGrant, leaseTake, leaseWaitMs } from '../../src/workers/state/lease.ts';
import { leaseSize } from '../../src/cluster/ratelimit-shard.ts';

/** A lease at cell 0 of its own buffer (BigInt64 cells seen as Int32, as the table does). */
const fresh = () => new Int32Array(new SharedArrayBuffer(64));
/** The lease clock (ms) of these tests: any value, the clock wraps. */
const T0 = 1_000_000;

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
    leaseGrant(big, 0, 2, 0, 100, T0);
    expect(leaseAvailable(big, 0, T0)).toBe(1);
    expect(leaseTake(big, 0, 1, T0)).toBe(ADMITTED | ASK);
    // A larger lease asks only once it is half spent.
    const big2 = fresh();
    leaseGrant(big2, 0, 10, 0, 100, T0);
    const got = Array.from({ length: 10 }, () => leaseTake(big2, 0, 10, T0));
    expect(got.filter((r) => r & ADMITTED)).toHaveLength(10);
    expect(got.findIndex((r) => r & ASK)).toBe(4);
    expect(got.filter((r) => r & ASK)).toHaveLength(1);
  });

  test('a dry bucket refuses without credit or asks until the next token is due, then lends again', () => {
    const big = fresh();
    leaseGrant(big, 0, 0, 50, 100, T0);
    expect(leaseTake(big, 0, 1, T0)).toBe(0);
    expect(leaseTake(big, 0, 1, T0 + 49)).toBe(0);
    expect(leaseWaitMs(big, 0, 50_000_000n, T0 + 20)).toBe(30);
    expect(leaseTake(big, 0, 1, T0 + 51)).toBe(ADMITTED | ASK);
  });

  test('leased tokens expire with the lease: a quiet instance does not hoard them; debt does not expire', () => {
    const big = fresh();
    leaseGrant(big, 0, 5, 0, 100, T0);
    expect(leaseAvailable(big, 0, T0 + 99)).toBe(5);
    expect(leaseAvailable(big, 0, T0 + 101)).toBe(0);
    expect(leaseTake(big, 0, 5, T0 + 101)).toBe(ADMITTED | ASK);
    expect(leaseAvailable(big, 0, T0 + 10_000)).toBe(-1);
  });

  test('an ask never answered is taken over after WANT_STALE_MS', () => {
    const big = fresh();
    expect(leaseTake(big, 0, 1, T0)).toBe(ADMITTED | ASK);
    expect(leaseTake(big, 0, 1, T0 + WANT_STALE_MS - 1)).toBe(0);
    expect(leaseTake(big, 0, 1, T0 + WANT_STALE_MS)).toBe(ASK);
    expect(Atomics.load(big, LEASE.WANT)).toBe(T0 + WANT_STALE_MS);
  });

  test('instances spending leases of one GCRA bucket admit at most burst + rate × time + 2 leases each', () => {
    // A model of the cluster: the Lua script's GCRA on a virtual clock, asks answered after a
    // round trip, arrivals at random instances. The bound must hold at every step.
    // Virtual time in µs; the leases see it in ms.
    for (const [perSecond, burst, instances] of [[20, 20, 3], [1000, 100, 5], [5, 1, 2]] as const) {
      const interval = 1e6 / perSecond;
      const lease = leaseSize(BigInt(Math.round(1e9 / perSecond)), burst);
      const leases = Array.from({ length: instances }, fresh);
      let tat = 0;
      const redis = (now: number, want: number): [number, number] => {
        if (tat < now) tat = now;
        const g = Math.max(0, Math.min(Math.floor((now + burst * interval - tat) / interval), want));
        tat += g * interval;
        return [g, g < want ? Math.max(1, Math.ceil(tat + lease * interval - burst * interval - now)) : 0];
      };
      const inFlight: { at: number; i: number }[] = [];
      const rtt = 1_000;
      let seed = 7;
      const rand = (): number => (seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x80000000;
      let admitted = 0;
      const start = 1e12;
      let now = start;
      const ms = (us: number): number => Math.floor(us / 1000) & 0x7fffffff;
      for (let step = 0; step < 20_000; step++) {
        now += Math.floor((rand() * interval) / 4);
        for (const f of inFlight.filter((x) => x.at <= now)) {
          inFlight.splice(inFlight.indexOf(f), 1);
          const want = Math.max(1, lease - leaseAvailable(leases[f.i]!, 0, ms(now)));
          const [g, waitUs] = redis(now, want);
          leaseGrant(leases[f.i]!, 0, g, waitUs > 0 ? Math.ceil(waitUs / 1000) : 0, Math.max(100, Math.ceil((interval * lease) / 1000)), ms(now));
        }
        const i = Math.floor(rand() * instances);
        const r = leaseTake(leases[i]!, 0, lease, ms(now));
        if (r & ASK) inFlight.push({ at: now + rtt, i });
        if (r & ADMITTED) admitted++;
        const bound = burst + Math.floor((now - start) / interval) + 1 + 2 * lease * instances;
        if (admitted > bound) expect.fail(`${admitted} admitted > ${bound} at step ${step} (${perSecond}/s, burst ${burst}, ${instances} instances)`);
      }
      // And the limit is used, not starved: most of what the bucket allowed was admitted.
      const allowed = burst + Math.floor((now - start) / interval);
      expect(admitted).toBeGreaterThan(allowed * 0.8);
    }
  });
});
