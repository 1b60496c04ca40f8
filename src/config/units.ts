/**
 * The units of the config file: durations, sizes and listen addresses. Each parser takes what
 * YAML gives (a string or a number) and throws a `UnitError` whose message is written for the
 * user: the config loader puts it, unchanged, after `FILE:LINE:COL key.path:`.
 */

/** A value in the config could not be read as a duration, size or address. */
export class UnitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnitError';
  }
}

/** The longest duration a Node timer can wait (2^31 - 1 ms, about 24.8 days). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_PART = /(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)/gy;

/**
 * Parses a duration into milliseconds. Units are `ms`, `s`, `m`, `h` and `d`; parts may be
 * chained (`1m30s`). A plain number, or a string of digits, is milliseconds.
 *
 * @example
 * parseDuration('500ms'); // 500
 * parseDuration('1m30s'); // 90_000
 * parseDuration(250);     // 250
 */
export function parseDuration(value: string | number): number {
  const ms = typeof value === 'number' ? checkNumber(value, 'duration') : parseDurationText(value.trim());
  if (ms > MAX_DURATION_MS) throw new UnitError(`duration ${show(value)} is too long (at most 24d, the longest a timer can wait)`);
  return ms;
}

function parseDurationText(text: string): number {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  DURATION_PART.lastIndex = 0;
  let total = 0;
  let matched = 0;
  for (let m = DURATION_PART.exec(text); m; m = DURATION_PART.exec(text)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    matched = DURATION_PART.lastIndex;
  }
  if (text === '' || matched !== text.length) {
    throw new UnitError(`invalid duration ${show(text)}: use a number with ms, s, m, h or d (500ms, 5s, 1m30s), or a plain number of milliseconds`);
  }
  return total;
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1_000, mb: 1_000_000, gb: 1_000_000_000,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3,
};

/**
 * Parses a size into bytes. `KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` are powers
 * of 1000 (SI); `B` is bytes. Units are case-insensitive. A plain number is bytes. The result
 * must be a whole number of bytes.
 *
 * @example
 * parseSize('64KiB'); // 65_536
 * parseSize('10KB');  // 10_000
 * parseSize(512);     // 512
 */
export function parseSize(value: string | number): number {
  let bytes: number;
  if (typeof value === 'number') {
    bytes = checkNumber(value, 'size');
  } else {
    const m = /^(\d+(?:\.\d+)?|\.\d+)([a-z]*)$/i.exec(value.trim());
    const unit = m ? SIZE_UNITS[(m[2] || 'b').toLowerCase()] : undefined;
    if (!m || unit === undefined) {
      throw new UnitError(`invalid size ${show(value)}: use a number with B, KiB, MiB, GiB (1024-based) or KB, MB, GB (1000-based), or a plain number of bytes`);
    }
    bytes = Number(m[1]) * unit;
  }
  if (!Number.isInteger(bytes)) throw new UnitError(`size ${show(value)} is not a whole number of bytes`);
  if (!Number.isSafeInteger(bytes)) throw new UnitError(`size ${show(value)} is too large`);
  return bytes;
}

/** A parsed `listen` or backend address. `address` is the text as written in the config. */
export interface HostPort {
  host: string;
  port: number;
  address: string;
}

/** The host a bare port listens on: every IPv4 interface. Write `[::]:PORT` for IPv6 as well. */
export const ANY_HOST = '0.0.0.0';

/**
 * Parses a listen address: `host:port`, `[ipv6]:port`, or a bare port (number or digits) which
 * listens on all IPv4 interfaces (`0.0.0.0`); `:port` means the same. The host comes back without
 * brackets, ready for `net.Server#listen`. Port 0 asks the OS for a free port.
 *
 * @example
 * parseListen('127.0.0.1:8080'); // { host: '127.0.0.1', port: 8080, address: '127.0.0.1:8080' }
 * parseListen('[::1]:80');       // { host: '::1', port: 80, address: '[::1]:80' }
 * parseListen(9000);             // { host: '0.0.0.0', port: 9000, address: '9000' }
 */
export function parseListen(value: string | number): HostPort {
  const address = String(value).trim();
  if (typeof value === 'number' || /^\d+$/.test(address)) return { host: ANY_HOST, port: parsePort(address, address), address };
  const hp = splitHostPort(address, 'listen address', 'host:port, [ipv6]:port or a bare port');
  return { host: hp.host === '' ? ANY_HOST : hp.host, port: hp.port, address };
}

/**
 * Parses an address to connect to: `host:port` or `[ipv6]:port`; the host is required.
 *
 * @example
 * parseHostPort('10.0.0.7:9001'); // { host: '10.0.0.7', port: 9001, address: '10.0.0.7:9001' }
 */
export function parseHostPort(value: string): HostPort {
  const address = value.trim();
  const hp = splitHostPort(address, 'address', 'host:port or [ipv6]:port');
  if (hp.host === '') throw new UnitError(`address ${show(address)} has no host: use host:port`);
  return { ...hp, address };
}

function splitHostPort(address: string, what: string, forms: string): { host: string; port: number } {
  const bracketed = /^\[([0-9a-fA-F:.%\w]*)\]:(\S*)$/.exec(address);
  if (bracketed) return { host: bracketed[1]!, port: parsePort(bracketed[2]!, address) };
  const colon = address.lastIndexOf(':');
  if (colon < 0) throw new UnitError(`invalid ${what} ${show(address)}: use ${forms}`);
  const host = address.slice(0, colon);
  if (/[\s/@[\]]/.test(host)) throw new UnitError(`invalid ${what} ${show(address)}: use ${forms}`);
  if (host.includes(':')) throw new UnitError(`invalid ${what} ${show(address)}: put IPv6 hosts in brackets, like [::1]:8080`);
  return { host, port: parsePort(address.slice(colon + 1), address) };
}

function parsePort(text: string, address: string): number {
  if (!/^\d+$/.test(text)) throw new UnitError(`invalid port in ${show(address)}: expected a number from 0 to 65535`);
  const port = Number(text);
  if (port > 65_535) throw new UnitError(`port ${port} in ${show(address)} is out of range (0-65535)`);
  return port;
}

function checkNumber(n: number, what: string): number {
  if (!Number.isFinite(n) || n < 0) throw new UnitError(`invalid ${what} ${n}: must be a number >= 0`);
  return n;
}

function show(v: string | number): string {
  return typeof v === 'number' ? String(v) : JSON.stringify(v);
}
