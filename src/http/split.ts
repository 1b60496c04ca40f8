/**
 * Traffic split for a route with `split`: a weighted choice per request, or with `sticky` a
 * weighted rendezvous hash of the header or cookie value, so a value keeps its upstream while
 * the entries stay the same, and removing an entry moves only the values that were on it.
 */
import type { RouteConfig } from '../config/types.ts';

/**
 * A source of uniform numbers in [0, 1): `Math.random` in production, seeded in tests.
 *
 * @example
 * const fixed: RandomSource = () => 0.25;
 */
export type RandomSource = () => number;

const TWO_POW_32 = 4294967296;

/** FNV-1a over the UTF-16 code units: cheap, and good enough once finished by `mix32`. */
function fnv1a(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** murmur3's finalizer: every input bit flips about half of the output bits. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Picks an upstream for each request of one split route. Build it once per config snapshot.
 *
 * @example
 * const s = new Split([{ upstream: 'stable', weight: 9 }, { upstream: 'canary', weight: 1 }]);
 * s.pick(undefined);   // 'stable' 90% of the time
 * s.pick('user-42');   // always the same upstream for 'user-42'
 */
export class Split {
  readonly upstreams: readonly string[];
  private readonly weights: Float64Array;
  private readonly cumulative: Float64Array;
  /** Per entry, from its upstream name (and occurrence), so removing another entry keeps it. */
  private readonly seeds: Uint32Array;
  private readonly total: number;
  private readonly random: RandomSource;

  constructor(entries: readonly { upstream: string; weight: number }[], random: RandomSource = Math.random) {
    const seen = new Map<string, number>();
    this.upstreams = entries.map((e) => e.upstream);
    this.weights = Float64Array.from(entries, (e) => Math.max(0, e.weight));
    this.cumulative = new Float64Array(entries.length);
    this.seeds = Uint32Array.from(entries, (e) => {
      const n = seen.get(e.upstream) ?? 0;
      seen.set(e.upstream, n + 1);
      return mix32(fnv1a(n === 0 ? e.upstream : `${e.upstream}#${n}`, 0x9e3779b9));
    });
    let sum = 0;
    for (let i = 0; i < entries.length; i++) this.cumulative[i] = sum += this.weights[i]!;
    this.total = sum;
    this.random = random;
  }

  /**
   * The upstream for a request: by `stickyValue` when there is one (non-empty), else at random
   * by weight. `undefined` only when every weight is 0 (the caller answers 503).
   */
  pick(stickyValue?: string): string | undefined {
    if (this.total <= 0) return undefined;
    const i = stickyValue === undefined || stickyValue.length === 0 ? this.weightedIndex() : this.stickyIndex(stickyValue);
    return this.upstreams[i];
  }

  private weightedIndex(): number {
    const r = this.random() * this.total;
    const c = this.cumulative;
    // Splits are short: a linear scan beats a binary search below a few dozen entries.
    for (let i = 0; i < c.length; i++) if (r < c[i]!) return i;
    return c.length - 1;
  }

  /** Weighted rendezvous: the entry with the highest -w / ln(h(value, entry)) wins. */
  private stickyIndex(value: string): number {
    const base = fnv1a(value, 0);
    let best = 0;
    let bestScore = -1;
    for (let i = 0; i < this.seeds.length; i++) {
      const w = this.weights[i]!;
      if (w <= 0) continue;
      // h in (0, 1): never 0 (ln would be -inf) nor 1 (score +inf).
      const h = (mix32(base ^ this.seeds[i]!) + 0.5) / TWO_POW_32;
      const score = -w / Math.log(h);
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    return best;
  }
}

/**
 * The `Split` of a route with `split`, or `undefined` for a route with one `upstream`.
 *
 * @example
 * const split = splitFor(route);
 * const upstream = split ? split.pick(stickyValueOf(route, req)) : route.upstream;
 */
export function splitFor(route: RouteConfig, random?: RandomSource): Split | undefined {
  return route.split === undefined ? undefined : new Split(route.split, random);
}

const SEMI = 0x3b;
const SPACE = 0x20;
const TAB = 0x09;
const EQUALS = 0x3d;
const DQUOTE = 0x22;

/**
 * The value of cookie `name` in a `Cookie` header, or `undefined`. Scans in place: the only
 * string made is the value found (names are compared with `startsWith` at each position).
 *
 * @example
 * cookieValue('a=1; session=abc; b=2', 'session'); // 'abc'
 * cookieValue('a=1; sess=abc', 'session');         // undefined
 */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined || name.length === 0) return undefined;
  const len = header.length;
  let pos = 0;
  while (pos < len) {
    let c = header.charCodeAt(pos);
    while ((c === SPACE || c === TAB || c === SEMI) && ++pos < len) c = header.charCodeAt(pos);
    const eq = pos + name.length;
    const next = header.indexOf(';', pos);
    const stop = next < 0 ? len : next;
    if (eq < stop && header.charCodeAt(eq) === EQUALS && header.startsWith(name, pos)) {
      let start = eq + 1;
      let end = stop;
      while (end > start && (header.charCodeAt(end - 1) === SPACE || header.charCodeAt(end - 1) === TAB)) end--;
      // RFC 6265 allows a quoted cookie-value; the quotes are not part of it.
      if (end - start >= 2 && header.charCodeAt(start) === DQUOTE && header.charCodeAt(end - 1) === DQUOTE) {
        start++;
        end--;
      }
      return header.slice(start, end);
    }
    pos = stop + 1;
  }
  return undefined;
}

/**
 * The sticky key of a request for a route with `sticky`: the header's value (first one), or the
 * cookie's. `header` looks a request header up by lowercase name, as the codec stores them.
 *
 * @example
 * stickyValueOf(route, (n) => headers.get(n)); // 'user-42', or undefined (weighted choice)
 */
export function stickyValueOf(route: RouteConfig, header: (lowercaseName: string) => string | undefined): string | undefined {
  const sticky = route.sticky;
  if (sticky === undefined) return undefined;
  if (sticky.header !== undefined) {
    const v = header(sticky.header.toLowerCase());
    if (v !== undefined && v.length > 0) return v;
  }
  return sticky.cookie === undefined ? undefined : cookieValue(header('cookie'), sticky.cookie);
}
