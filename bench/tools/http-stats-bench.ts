/**
 * HttpStats micro-benchmark: ns per `request()` (src/http/stats.ts), the call every HTTP request
 * makes in its shard's thread. The request mix is fixed in advance (4 listeners × 50 routes plus
 * the no-route series, 5 statuses, durations spread over the buckets), so the loop measures the
 * counting alone; an empty loop over the same arrays is measured and subtracted. Also times
 * `snapshot()` and `mergeHttpStats` at that size (the scrape side).
 *   npm exec -- node bench/tools/http-stats-bench.ts [--count 20000000]
 */
import { parseArgs } from 'node:util';
import { HttpStats, emptyHttpStats, mergeHttpStats } from '../../src/http/stats.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '20000000' } } });
const COUNT = Number(values.count);

let seed = 42;
const rnd = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296;

const listeners = ['web', 'api', 'admin', 'internal'];
const routes = [...Array.from({ length: 50 }, (_, i) => `route-${i}`), ''];
const statuses = [200, 200, 200, 200, 204, 301, 404, 502];
const MIX = 4096;
const mixL: string[] = [];
const mixR: string[] = [];
const mixC = new Int32Array(MIX);
const mixS = new Float64Array(MIX);
for (let i = 0; i < MIX; i++) {
  mixL.push(listeners[Math.floor(rnd() * listeners.length)]!);
  mixR.push(routes[Math.floor(rnd() * routes.length)]!);
  mixC[i] = statuses[Math.floor(rnd() * statuses.length)]!;
  // Log-uniform from 0.1 ms to 2 s.
  mixS[i] = 1e-4 * Math.pow(2e4, rnd());
}

function run(stats: HttpStats, n: number): void {
  for (let i = 0; i < n; i++) {
    const j = i & (MIX - 1);
    stats.request(mixL[j]!, mixR[j]!, mixC[j]!, mixS[j]!);
  }
}

let sink = 0;
function empty(n: number): void {
  for (let i = 0; i < n; i++) {
    const j = i & (MIX - 1);
    sink += mixL[j]!.length + mixR[j]!.length + mixC[j]! + mixS[j]!;
  }
}

const stats = new HttpStats();
run(stats, 1_000_000); // warm-up: every series exists before the timed run
empty(1_000_000);

const t0 = process.hrtime.bigint();
run(stats, COUNT);
const t1 = process.hrtime.bigint();
empty(COUNT);
const t2 = process.hrtime.bigint();

const perCall = Number(t1 - t0) / COUNT;
const loop = Number(t2 - t1) / COUNT;

// The scrape side, warmed up first (the first calls run unoptimised code).
const SNAPS = 800;
for (let i = 0; i < 200; i++) sink += stats.snapshot().routes.length;
const s0 = process.hrtime.bigint();
for (let i = 0; i < SNAPS; i++) sink += stats.snapshot().routes.length;
const s1 = process.hrtime.bigint();
const snaps = Array.from({ length: 8 }, () => stats.snapshot());
const mergeAll = (): void => {
  const total = emptyHttpStats();
  for (const s of snaps) mergeHttpStats(total, s);
  sink += total.routes.length;
};
for (let i = 0; i < 200 / 8; i++) mergeAll();
const m0 = process.hrtime.bigint();
for (let i = 0; i < SNAPS / 8; i++) mergeAll();
const s2 = process.hrtime.bigint();

const series = snaps[0]!.routes.length;
console.log(`request(): ${perCall.toFixed(1)} ns per call (${(perCall - loop).toFixed(1)} ns over an empty loop of ${loop.toFixed(1)} ns), ${COUNT} calls`);
console.log(`snapshot(): ${(Number(s1 - s0) / SNAPS / 1e3).toFixed(1)} µs for ${series} series`);
console.log(`mergeHttpStats(): ${(Number(s2 - m0) / SNAPS / 1e3).toFixed(1)} µs per snapshot of ${series} series`);
if (sink === 0.5) console.log(sink);
