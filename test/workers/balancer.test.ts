import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { Balancer } from '../../src/workers/balancer.ts';
import { B, StateTable } from '../../src/workers/state-table.ts';
import type { ShardUpstream } from '../../src/workers/shard-config.ts';

function upstream(balance: string, weights: number[]): ShardUpstream {
  return {
    name: 'app',
    balance,
    connectTimeoutMs: 1_000,
    connectRetries: 2,
    failureThreshold: 0,
    backends: weights.map((weight, i) => ({ address: `10.0.0.${i}:80`, host: `10.0.0.${i}`, port: 80, weight, slot: i })),
  };
}
const names = 'ABCDEFGH';
const seq = (b: Balancer, n: number): string => Array.from({ length: n }, () => names[b.upstream.backends.indexOf(b.pick()!)]).join('');

describe('Balancer', () => {
  test('round robin cycles, starting at the shard offset, skipping unhealthy and open-breaker backends', () => {
    const table = StateTable.create();
    expect(seq(new Balancer(upstream('round_robin', [1, 1, 1]), table), 6)).toBe('ABCABC');
    expect(seq(new Balancer(upstream('round_robin', [1, 1, 1]), table, 1), 3)).toBe('BCA');
    table.backendSet(1, B.HEALTHY, 0);
    table.backendSet(2, B.BREAKER, 1);
    expect(seq(new Balancer(upstream('round_robin', [1, 1, 1]), table), 3)).toBe('AAA');
    table.backendSet(0, B.HEALTHY, 0);
    expect(new Balancer(upstream('round_robin', [1, 1, 1]), table).pick()).toBeUndefined();
  });

  test('smooth weighted round robin: weights 5, 1, 1 give A A B A C A A, with no bursts', () => {
    const b = new Balancer(upstream('weighted_round_robin', [5, 1, 1]), StateTable.create());
    expect(seq(b, 7)).toBe('AABACAA');
    expect(seq(b, 7)).toBe('AABACAA');
  });

  test('smooth weighted round robin gives each backend exactly its share per cycle', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 6 }), (weights) => {
        const b = new Balancer(upstream('weighted_round_robin', weights), StateTable.create());
        const total = weights.reduce((x, y) => x + y, 0);
        const counts = weights.map(() => 0);
        for (let i = 0; i < total; i++) counts[b.upstream.backends.indexOf(b.pick()!)]!++;
        expect(counts).toEqual(weights);
      }),
    );
  });

  test('a tried backend is never picked again for the same connection', () => {
    const up = upstream('weighted_round_robin', [5, 1, 1]);
    const b = new Balancer(up, StateTable.create());
    expect(b.pick([up.backends[0]!, up.backends[1]!])).toBe(up.backends[2]);
    expect(b.pick(up.backends)).toBeUndefined();
  });

  test('least connections picks the fewest active connections across shards, ties round robin', () => {
    const table = StateTable.create();
    const b = new Balancer(upstream('least_connections', [1, 1, 1]), table);
    table.backendAdd(0, B.ACTIVE, 3);
    table.backendAdd(1, B.ACTIVE, 1);
    table.backendAdd(2, B.ACTIVE, 2);
    expect(seq(b, 1)).toBe('B');
    table.backendAdd(1, B.ACTIVE, 5);
    expect(seq(b, 1)).toBe('C');
    table.backendAdd(0, B.ACTIVE, -3);
    table.backendAdd(2, B.ACTIVE, -2);
    // A and C both at 0: alternate.
    expect(seq(b, 2)).toMatch(/^(AC|CA)$/);
  });

  test('p2c takes the less loaded of two random backends', () => {
    const table = StateTable.create();
    table.backendAdd(0, B.ACTIVE, 10);
    table.backendAdd(1, B.ACTIVE, 0);
    table.backendAdd(2, B.ACTIVE, 5);
    // random() = 0 then 0: candidates A (index 0) and B (index 0 of the rest, shifted to 1).
    const b = new Balancer(upstream('p2c', [1, 1, 1]), table, 0, () => 0);
    expect(seq(b, 1)).toBe('B');
    const picks = new Set(Array.from({ length: 200 }, () => new Balancer(upstream('p2c', [1, 1, 1]), table).pick()!.slot));
    // The most loaded backend is never the less loaded of two distinct candidates.
    expect(picks.has(0)).toBe(false);
  });
});
