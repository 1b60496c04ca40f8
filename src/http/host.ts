/**
 * Host names as the router compares them: without the port, lowercased, without one trailing
 * dot, IPv6 literals without their brackets. Used on both sides (the `Host` header of a request
 * and `match.host` of a route), so `[::1]:8080`, `[::1]` and `::1` are the same host.
 */

const OPEN_BRACKET = 0x5b;
const DOT = 0x2e;

/**
 * The comparable form of a `Host` header value (or of a route's `match.host`); `undefined` when
 * there is no host left (absent, empty, `:80`, or an unclosed `[`).
 *
 * @example
 * normalizeHost('API.Example.com.:8443'); // 'api.example.com'
 * normalizeHost('[2001:DB8::1]:443');     // '2001:db8::1'
 * normalizeHost('::1');                   // '::1' (a bare IPv6 literal has no port)
 */
export function normalizeHost(raw: string | undefined): string | undefined {
  if (raw === undefined || raw.length === 0) return undefined;
  let host: string;
  if (raw.charCodeAt(0) === OPEN_BRACKET) {
    const close = raw.indexOf(']', 1);
    if (close < 0) return undefined;
    host = raw.slice(1, close);
  } else {
    const colon = raw.indexOf(':');
    // One colon is a port; more than one is an IPv6 literal written without brackets (config).
    host = colon < 0 || raw.indexOf(':', colon + 1) >= 0 ? raw : raw.slice(0, colon);
  }
  const last = host.length - 1;
  if (last > 0 && host.charCodeAt(last) === DOT) host = host.slice(0, last);
  if (host.length === 0) return undefined;
  // Hosts are nearly always lowercase already: a scan is cheaper than toLowerCase() (~18 ns).
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if ((c >= 0x41 && c <= 0x5a) || c > 0x7f) return host.toLowerCase();
  }
  return host;
}

/**
 * The suffix of a `*.suffix` route host (`'*.example.com'` gives `'example.com'`), or
 * `undefined` for a host that is not a wildcard.
 *
 * @example
 * wildcardSuffix('*.Example.com'); // 'example.com'
 * wildcardSuffix('example.com');   // undefined
 */
export function wildcardSuffix(routeHost: string): string | undefined {
  if (routeHost.length < 3 || routeHost.charCodeAt(0) !== 0x2a || routeHost.charCodeAt(1) !== DOT) return undefined;
  return normalizeHost(routeHost.slice(2));
}
