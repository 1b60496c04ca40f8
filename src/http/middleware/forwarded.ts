/**
 * The client address and the `X-Forwarded-*` headers. Only a peer in `trustedProxies` may speak
 * for someone else: from any other peer, X-Forwarded-For never changes the client address, and
 * its X-Forwarded-Proto, -Host and -Port are replaced by the gateway's.
 */
import { compileCidrs, unmapAddress, type CidrMatcher } from './ip.ts';

/**
 * The listener keys of the forwarded headers.
 *
 * @example
 * const cfg: ForwardedConfig = { trustedProxies: ['10.0.0.0/8'], xForwardedFor: 'append' };
 */
export interface ForwardedConfig {
  /** CIDRs of proxies in front of the gateway (default none). */
  trustedProxies?: readonly string[];
  /** Append the peer to X-Forwarded-For (default) or replace the field with it. */
  xForwardedFor?: 'append' | 'replace';
}

/**
 * The forwarded-header policy of a listener, compiled once per config.
 *
 * @example
 * const fw = compileForwarded({ trustedProxies: ['10.0.0.0/8'] });
 * fw.trusted.matches('10.1.2.3'); // true
 */
export interface CompiledForwarded {
  trusted: CidrMatcher;
  replace: boolean;
}

/**
 * Compiles a listener's `trustedProxies` and `xForwardedFor`; throws on an invalid CIDR.
 *
 * @example
 * compileForwarded({ xForwardedFor: 'replace' }).replace; // true
 */
export function compileForwarded(cfg: ForwardedConfig): CompiledForwarded {
  return { trusted: compileCidrs(cfg.trustedProxies ?? []), replace: cfg.xForwardedFor === 'replace' };
}

/**
 * Every `x-forwarded-for` field of `headers` joined in order with `, ` (RFC 9110 §5.3), or ''
 * when there is none.
 *
 * @example
 * joinedForwardedFor(['x-forwarded-for', '1.1.1.1', 'x-forwarded-for', '2.2.2.2']); // '1.1.1.1, 2.2.2.2'
 */
export function joinedForwardedFor(headers: readonly string[]): string {
  let out = '';
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== 'x-forwarded-for') continue;
    const v = headers[i + 1];
    if (v === '') continue;
    out = out === '' ? v : `${out}, ${v}`;
  }
  return out;
}

/**
 * The client address the gateway uses (rate-limit `key: ip`, access log): the peer, or, when
 * the peer is trusted, the right-most X-Forwarded-For entry that is not trusted. When every
 * entry is trusted, the left-most one. An entry that is not an IP address ends the walk and is
 * returned as is: the trusted proxy wrote it, so it is what that proxy saw. IPv4-mapped IPv6
 * addresses are returned as plain IPv4.
 *
 * @example
 * const fw = compileForwarded({ trustedProxies: ['10.0.0.0/8'] });
 * clientAddress('10.0.0.1', '203.0.113.7, 10.0.0.9', fw); // '203.0.113.7'
 * clientAddress('198.51.100.1', '203.0.113.7', fw);       // '198.51.100.1' (not trusted)
 */
export function clientAddress(peer: string, forwardedFor: string, fw: CompiledForwarded): string {
  const self = unmapAddress(peer);
  if (forwardedFor === '' || !fw.trusted.matches(self)) return self;
  let end = forwardedFor.length;
  let last = self;
  // Walk the comma-separated entries from the right without splitting the string.
  while (end > 0) {
    const comma = forwardedFor.lastIndexOf(',', end - 1);
    let s = comma + 1;
    let e = end;
    while (s < e && isOws(forwardedFor.charCodeAt(s))) s++;
    while (e > s && isOws(forwardedFor.charCodeAt(e - 1))) e--;
    end = comma < 0 ? 0 : comma;
    if (s === e) continue;
    const entry = unmapAddress(forwardedFor.slice(s, e));
    if (fw.trusted.classify(entry) !== 1) return entry;
    last = entry;
  }
  return last;
}

function isOws(c: number): boolean {
  return c === 32 || c === 9;
}

/**
 * The X-Forwarded-For value the gateway sends upstream: `incoming, peer` (`append`, the incoming
 * fields joined) or `peer` (`replace`, or no incoming field).
 *
 * @example
 * forwardedForValue('1.1.1.1', '::ffff:10.0.0.2', fw); // '1.1.1.1, 10.0.0.2' with append
 */
export function forwardedForValue(forwardedFor: string, peer: string, fw: CompiledForwarded): string {
  const self = unmapAddress(peer);
  return fw.replace || forwardedFor === '' ? self : `${forwardedFor}, ${self}`;
}
