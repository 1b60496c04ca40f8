/**
 * IP addresses and CIDR lists for `trustedProxies`. Addresses are parsed by hand (no regular
 * expression runs on an X-Forwarded-For entry) into four 32-bit words, reused across calls:
 * matching a peer against a compiled list allocates nothing.
 */

/** Words of the last parsed address; IPv4 is stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`). */
const scratch = new Uint32Array(4);
const GROUPS = new Uint16Array(8);
const FULL = new Uint16Array(8);

/**
 * Parses `s[from, to)` as dotted IPv4 into `out` (as a 32-bit number), or returns false.
 * Exactly four decimal parts 0-255, no leading zeros (`010` is octal to some parsers).
 */
function parseV4(s: string, from: number, to: number): number {
  let value = 0;
  let parts = 0;
  let p = from;
  while (parts < 4) {
    const start = p;
    let part = 0;
    while (p < to) {
      const d = s.charCodeAt(p) - 48;
      if (d < 0 || d > 9) break;
      part = part * 10 + d;
      p++;
    }
    const len = p - start;
    if (len === 0 || len > 3 || part > 255 || (len > 1 && s.charCodeAt(start) === 48)) return -1;
    value = value * 256 + part;
    parts++;
    if (parts < 4) {
      if (s.charCodeAt(p) !== 46) return -1;
      p++;
    }
  }
  return p === to ? value : -1;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  c |= 0x20;
  return c >= 97 && c <= 102 ? c - 87 : -1;
}

/** Parses IPv6 `s[0, to)` (with `::`, an IPv4 tail) into `scratch`; false when invalid. */
function parseV6(s: string, to: number): boolean {
  const groups = GROUPS;
  let n = 0;
  let gap = -1;
  let p = 0;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gap = 0;
    p = 2;
  }
  while (p < to) {
    if (n === 8) return false;
    const start = p;
    let v = 0;
    while (p < to && p - start < 5) {
      const h = hexDigit(s.charCodeAt(p));
      if (h < 0) break;
      v = v * 16 + h;
      p++;
    }
    if (p < to && s.charCodeAt(p) === 46) {
      // An IPv4 tail fills the last two groups.
      if (n > 6) return false;
      const v4 = parseV4(s, start, to);
      if (v4 < 0) return false;
      groups[n++] = v4 >>> 16;
      groups[n++] = v4 & 0xffff;
      p = to;
      break;
    }
    if (p === start || p - start > 4) return false;
    groups[n++] = v;
    if (p === to) break;
    if (s.charCodeAt(p) !== 58) return false;
    p++;
    if (s.charCodeAt(p) === 58) {
      if (gap >= 0) return false;
      gap = n;
      p++;
    } else if (p === to) return false;
  }
  if (gap < 0 ? n !== 8 : n > 7) return false;
  // Move the groups after `::` to the end, zeros in the gap.
  const full = FULL;
  full.fill(0);
  const tail = gap < 0 ? 0 : n - gap;
  for (let i = 0; i < n - tail; i++) full[i] = groups[i];
  for (let i = 0; i < tail; i++) full[8 - tail + i] = groups[gap + i];
  for (let i = 0; i < 4; i++) scratch[i] = ((full[2 * i] << 16) | full[2 * i + 1]) >>> 0;
  return true;
}

/**
 * Parses an IPv4 or IPv6 address into the shared scratch words; returns 4 for IPv4, 6 for
 * IPv6 (IPv4-mapped ones included), 0 when `s` is not an address. A `%zone` is ignored.
 */
function parseAddress(s: string): 0 | 4 | 6 {
  let to = s.indexOf('%');
  if (to < 0) to = s.length;
  if (to === 0 || to > 45) return 0;
  if (s.indexOf(':') < 0) {
    const v4 = parseV4(s, 0, to);
    if (v4 < 0) return 0;
    scratch[0] = 0;
    scratch[1] = 0;
    scratch[2] = 0xffff;
    scratch[3] = v4;
    return 4;
  }
  return parseV6(s, to) ? 6 : 0;
}

/**
 * True when `s` is an IPv4 or IPv6 address (IPv6 without brackets).
 *
 * @example
 * isIpAddress('::ffff:10.0.0.1'); // true
 * isIpAddress('10.0.0.1:80');     // false
 */
export function isIpAddress(s: string): boolean {
  return parseAddress(s) !== 0;
}

/**
 * The address as the gateway reports it: an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
 * dual-stack socket gives for an IPv4 peer) becomes plain IPv4; anything else is returned as is.
 *
 * @example
 * unmapAddress('::ffff:10.0.0.1'); // '10.0.0.1'
 */
export function unmapAddress(s: string): string {
  if (s.length > 7 && s.charCodeAt(0) === 58 && s.startsWith('::ffff:') && s.indexOf('.', 7) > 0) {
    return parseV4(s, 7, s.length) >= 0 ? s.slice(7) : s;
  }
  return s;
}

/**
 * A compiled `trustedProxies` list: `matches(address)` is true when the address is in one of the
 * CIDRs. IPv4 CIDRs are stored as IPv4-mapped IPv6 (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), so
 * `10.1.2.3` and `::ffff:10.1.2.3` match the same entries.
 *
 * @example
 * const trusted = compileCidrs(['10.0.0.0/8', 'fd00::/8']);
 * trusted.matches('::ffff:10.9.9.9'); // true
 */
export class CidrMatcher {
  /** Per CIDR: four network words, then four mask words. */
  private readonly words: Uint32Array;
  readonly size: number;

  constructor(words: Uint32Array) {
    this.words = words;
    this.size = words.length / 8;
  }

  /** True when `address` (IPv4 or IPv6, not bracketed) is in the list; false for a non-address. */
  matches(address: string): boolean {
    // An empty list (no trustedProxies) matches nothing: the address is not even parsed.
    return this.size > 0 && this.classify(address) === 1;
  }

  /** 1 when `address` is in the list, 0 when it is an address outside it, -1 when not an address. */
  classify(address: string): -1 | 0 | 1 {
    if (parseAddress(address) === 0) return -1;
    if (this.size === 0) return 0;
    const w = this.words;
    for (let i = 0; i < w.length; i += 8) {
      if (
        ((scratch[0] & w[i + 4]) >>> 0) === w[i] && ((scratch[1] & w[i + 5]) >>> 0) === w[i + 1] &&
        ((scratch[2] & w[i + 6]) >>> 0) === w[i + 2] && ((scratch[3] & w[i + 7]) >>> 0) === w[i + 3]
      ) {
        return 1;
      }
    }
    return 0;
  }
}

/**
 * Compiles CIDRs (`10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`, or a bare address)
 * into a matcher, once per config. Throws a `TypeError` naming the first invalid entry.
 *
 * @example
 * compileCidrs(['127.0.0.1', '::1']).matches('127.0.0.1'); // true
 */
export function compileCidrs(cidrs: readonly string[]): CidrMatcher {
  const words = new Uint32Array(cidrs.length * 8);
  cidrs.forEach((cidr, k) => {
    const slash = cidr.indexOf('/');
    const addr = slash < 0 ? cidr : cidr.slice(0, slash);
    const kind = addr.includes('%') ? 0 : parseAddress(addr);
    const bits = slash < 0 ? (kind === 4 ? 32 : 128) : Number(cidr.slice(slash + 1));
    const max = kind === 4 ? 32 : 128;
    if (kind === 0 || !Number.isInteger(bits) || bits < 0 || bits > max || (slash >= 0 && !/^\d{1,3}$/.test(cidr.slice(slash + 1)))) {
      throw new TypeError(`invalid CIDR ${JSON.stringify(cidr)}: use an address with an optional /bits, like 10.0.0.0/8 or fd00::/8`);
    }
    let prefix = kind === 4 ? bits + 96 : bits;
    for (let i = 0; i < 4; i++) {
      const take = Math.min(32, Math.max(0, prefix));
      prefix -= 32;
      const mask = take === 0 ? 0 : (0xffffffff << (32 - take)) >>> 0;
      words[k * 8 + 4 + i] = mask;
      words[k * 8 + i] = (scratch[i] & mask) >>> 0;
    }
  });
  return new CidrMatcher(words);
}
