/**
 * The PROXY protocol, versions 1 and 2 (HAProxy's "The PROXY protocol, versions 1 & 2"): the
 * header a trusted load balancer puts at the start of a connection to tell the real client and
 * destination addresses, and the one Gatehouse sends to backends (`sendProxyProtocol`).
 * A pure codec: no sockets; the caller feeds the bytes read so far and strips `length` bytes.
 *
 * What is accepted:
 * - v1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, fields separated by exactly one
 *   space, addresses valid for the family (IPv4 dotted quads without leading zeros; IPv6 in
 *   any textual form without a zone), ports decimal 0-65535 without leading zeros; and
 *   `PROXY UNKNOWN[ <anything>]\r\n` (what follows UNKNOWN is ignored, as the spec says).
 *   At most 107 bytes including CRLF.
 * - v2: the 12-byte signature, version 2, command LOCAL (0) or PROXY (1). LOCAL discards the
 *   whole block, family byte included (spec). PROXY: UNSPEC (addresses kept by the caller),
 *   TCP over IPv4 or IPv6, UNIX stream; UDP is refused (`unsupported_family`: a stream listener
 *   cannot carry it), other family bytes are invalid. The length must hold the address block,
 *   TLVs must tile the rest exactly; a CRC32C TLV is verified; UNIQUE_ID at most 128 bytes,
 *   AUTHORITY at most 255, SSL sub-TLVs in bounds (as HAProxy checks). Total at most 4096
 *   bytes, `too_long` past it (HAProxy's own limit is its buffer size; balancers send well
 *   under 1 KiB).
 *
 * Why strict, and why it decides at once: the spec requires a receiver to accept only the
 * protocol and never guess; the header sets the client address used for access control and
 * logs, so anything not exactly a header is refused. A plain client ("GET /", a TLS
 * ClientHello) is told apart at the first byte that rules a header out, not after a timeout.
 * Once a result is an error, more bytes never change that (the code is the best diagnosis from
 * the bytes seen: with accept 'v2', a lone "P" reads as `version_not_allowed`, "PO" as
 * `not_proxy`). Partial v1 IPv6 fields are checked for characters, groups and length only; the
 * full grammar applies when the field ends.
 *
 * Addresses are formatted as Node formats `socket.remoteAddress` (libuv's inet_ntop: IPv6
 * compressed, lowercase, `::ffff:1.2.3.4` for mapped IPv4). TLV values are copies: the input
 * may be a read buffer that the next read overwrites.
 */

export type ProxyErrorCode = 'not_proxy' | 'version_not_allowed' | 'malformed' | 'too_long' | 'unsupported_family';

/** An address and port; for family 'unix' the address is the socket path and the port 0. */
export interface ProxyEndpoint {
  readonly address: string;
  readonly port: number;
}

/** A v2 type-length-value extension (PP2_TYPE_ALPN = 0x01, AUTHORITY = 0x02, ...), raw. */
export interface ProxyTlv {
  readonly type: number;
  readonly value: Buffer;
}

/** A decoded header. Family 'unknown' (v1 UNKNOWN, v2 LOCAL or UNSPEC) carries no address. */
export interface ProxyHeader {
  readonly version: 1 | 2;
  readonly command: 'proxy' | 'local';
  readonly family: 'tcp4' | 'tcp6' | 'unix' | 'unknown';
  readonly source?: ProxyEndpoint;
  readonly destination?: ProxyEndpoint;
  /** v2 PROXY only, and only when there is at least one. */
  readonly tlvs?: readonly ProxyTlv[];
}

export type ProxyParse =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'header'; readonly header: ProxyHeader; readonly length: number }
  | { readonly kind: 'error'; readonly code: ProxyErrorCode; readonly message: string };

const V1_MAX = 107;
const V2_MAX = 4096;
const V1_SIG = Buffer.from('PROXY ', 'latin1');
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
const DOT = 0x2e;
const PROTOS = ['TCP4', 'TCP6', 'UNKNOWN'];
const FIELDS = ['source address', 'destination address', 'source port', 'destination port'];

const NEED_MORE: ProxyParse = Object.freeze({ kind: 'need-more' });
const V1_UNKNOWN: ProxyHeader = Object.freeze({ version: 1, command: 'proxy', family: 'unknown' });
const V2_LOCAL: ProxyHeader = Object.freeze({ version: 2, command: 'local', family: 'unknown' });
const scratch = new Uint8Array(16);

function fail(code: ProxyErrorCode, message: string): ProxyParse {
  return { kind: 'error', code, message };
}

const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;

/**
 * Parses a PROXY header at the start of `buf` (the bytes read so far from a new connection).
 * Never throws. `need-more`: a valid prefix, read more; `header`: strip `length` bytes from the
 * stream, the rest is the client's; `error`: close the connection.
 *
 * @example
 * const r = parseProxyHeader(pending, 'any');
 * if (r.kind === 'header') { clientAddr = r.header.source?.address ?? socket.remoteAddress; rest = pending.subarray(r.length); }
 */
export function parseProxyHeader(buf: Buffer, accept: 'v1' | 'v2' | 'any'): ProxyParse {
  if (buf.length === 0) return NEED_MORE;
  if (buf[0] === V1_SIG[0]) return accept === 'v2' ? wrongVersion(buf, V1_SIG, 'v1') : parseV1(buf);
  if (buf[0] === V2_SIG[0]) return accept === 'v1' ? wrongVersion(buf, V2_SIG, 'v2') : parseV2(buf);
  return fail('not_proxy', `not a PROXY protocol header (byte 0 is ${hex(buf[0]!)})`);
}

function wrongVersion(buf: Buffer, sig: Buffer, version: string): ProxyParse {
  const n = Math.min(buf.length, sig.length);
  for (let i = 1; i < n; i++) if (buf[i] !== sig[i]) return fail('not_proxy', `not a PROXY protocol header (byte ${i} is ${hex(buf[i]!)})`);
  return fail('version_not_allowed', `a PROXY ${version} header, not accepted on this listener`);
}

function sigMismatch(buf: Buffer, sig: Buffer): ProxyParse | undefined {
  for (let i = 1; i < sig.length; i++) {
    if (i >= buf.length) return NEED_MORE;
    if (buf[i] !== sig[i]) return fail('not_proxy', `not a PROXY protocol header (byte ${i} is ${hex(buf[i]!)})`);
  }
  return undefined;
}

function parseV1(buf: Buffer): ProxyParse {
  const early = sigMismatch(buf, V1_SIG);
  if (early) return early;
  // The CR may be at index V1_MAX - 2 at the latest, so that the LF ends the 107th byte.
  const scanEnd = Math.min(buf.length, V1_MAX - 1);
  let cr = V1_SIG.length;
  while (cr < scanEnd && buf[cr] !== CR) cr++;
  const complete = cr < scanEnd;
  const r = v1Line(buf, V1_SIG.length, cr, complete);
  if (typeof r === 'string') return fail('malformed', `PROXY v1: ${r}`);
  if (!complete) return buf.length >= V1_MAX - 1 ? fail('too_long', `PROXY v1: no CRLF within ${V1_MAX} bytes`) : NEED_MORE;
  if (cr + 1 >= buf.length) return NEED_MORE;
  if (buf[cr + 1] !== LF) return fail('malformed', 'PROXY v1: CR not followed by LF');
  return { kind: 'header', header: r!, length: cr + 2 };
}

/**
 * Checks the v1 line after "PROXY " in buf[start, end). `complete`: `end` is the CR. Returns
 * the header (complete only), undefined (a valid prefix) or what is wrong.
 */
function v1Line(buf: Buffer, start: number, end: number, complete: boolean): ProxyHeader | string | undefined {
  let j = start;
  while (j < end && buf[j] !== SP) j++;
  const proto = matchWord(buf, start, j);
  if (j === end && !complete) return proto === -2 ? 'unknown protocol (TCP4, TCP6 or UNKNOWN)' : undefined;
  if (proto < 0) return 'unknown protocol (TCP4, TCP6 or UNKNOWN)';
  if (proto === 2) return complete ? V1_UNKNOWN : undefined; // the rest of the line is ignored
  const v6 = proto === 1;
  let src = '';
  let dst = '';
  let sport = 0;
  let pos = j;
  for (let f = 0; f < 4; f++) {
    if (pos === end) return 'missing fields';
    const s = pos + 1;
    let e = s;
    while (e < end && buf[e] !== SP) e++;
    if (e === end && !complete) return partialField(buf, s, e, f, v6) ? undefined : `invalid ${FIELDS[f]}`;
    if (e === s) return `empty ${FIELDS[f]} (one space between fields)`;
    if (f < 2) {
      const a = v6 ? (parseIPv6(buf, s, e, scratch) ? formatIPv6(scratch) : '') : scanIPv4(buf, s, e, undefined, 0) === 1 ? buf.toString('latin1', s, e) : '';
      if (a === '') return `invalid ${FIELDS[f]}`;
      if (f === 0) src = a;
      else dst = a;
    } else {
      const p = e - s <= 5 ? scanPort(buf, s, e) : -1;
      if (p < 0) return `invalid ${FIELDS[f]}`;
      if (f === 3) {
        if (e < end) return 'extra field after the destination port';
        return { version: 1, command: 'proxy', family: v6 ? 'tcp6' : 'tcp4', source: { address: src, port: sport }, destination: { address: dst, port: p } };
      }
      sport = p;
    }
    pos = e;
  }
  return 'missing fields'; // not reached: the loop returns at the fourth field
}

/** Index in PROTOS of buf[s, e) if exact, -1 if a proper prefix of one, -2 if neither. */
function matchWord(buf: Buffer, s: number, e: number): number {
  let prefix = false;
  for (let k = 0; k < PROTOS.length; k++) {
    const w = PROTOS[k]!;
    if (e - s > w.length) continue;
    let i = 0;
    while (i < e - s && buf[s + i] === w.charCodeAt(i)) i++;
    if (i < e - s) continue;
    if (i === w.length) return k;
    prefix = true;
  }
  return prefix ? -1 : -2;
}

function partialField(buf: Buffer, s: number, e: number, f: number, v6: boolean): boolean {
  if (f >= 2) return e - s <= 5 && scanPort(buf, s, e) >= 0;
  return v6 ? ipv6Prefix(buf, s, e) : scanIPv4(buf, s, e, undefined, 0) >= 0;
}

/** Decimal port in buf[s, e), at most 5 digits: its value, or -1 (leading zero, not a digit, > 65535). */
function scanPort(buf: Buffer, s: number, e: number): number {
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9 || (i > s && v === 0)) return -1;
    v = v * 10 + d;
  }
  return v > 65535 ? -1 : v;
}

/**
 * A strict dotted quad in buf[s, e): 1 if complete (its bytes written to out[off..] if given),
 * 0 if a proper prefix of one, -1 if neither.
 */
function scanIPv4(buf: Uint8Array, s: number, e: number, out: Uint8Array | undefined, off: number): number {
  let dots = 0;
  let digits = 0;
  let v = 0;
  for (let i = s; i < e; i++) {
    const c = buf[i]!;
    if (c === DOT) {
      if (digits === 0 || dots === 3) return -1;
      if (out) out[off + dots] = v;
      dots++;
      digits = 0;
      v = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && v === 0) return -1;
      v = v * 10 + c - 0x30;
      if (v > 255) return -1;
      digits++;
    } else return -1;
  }
  if (dots < 3 || digits === 0) return 0;
  if (out) out[off + 3] = v;
  return 1;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x57 : -1;
}

/** inet_pton(AF_INET6) on buf[s, e) into out (16 bytes): false if not an IPv6 address. */
function parseIPv6(buf: Uint8Array, s: number, e: number, out: Uint8Array): boolean {
  out.fill(0);
  let i = s;
  if (i < e && buf[i] === COLON && (i + 1 >= e || buf[++i] !== COLON)) return false;
  let tp = 0;
  let gap = -1;
  let tok = i;
  let digits = 0;
  let v = 0;
  while (i < e) {
    const c = buf[i++]!;
    const h = hexValue(c);
    if (h >= 0) {
      if (++digits > 4) return false;
      v = (v << 4) | h;
    } else if (c === COLON) {
      tok = i;
      if (digits === 0) {
        if (gap >= 0) return false;
        gap = tp;
        continue;
      }
      if (i === e || tp + 2 > 16) return false;
      out[tp++] = v >> 8;
      out[tp++] = v & 0xff;
      digits = 0;
      v = 0;
    } else if (c === DOT && tp + 4 <= 16 && scanIPv4(buf, tok, e, out, tp) === 1) {
      tp += 4;
      digits = 0;
      break;
    } else return false;
  }
  if (digits > 0) {
    if (tp + 2 > 16) return false;
    out[tp++] = v >> 8;
    out[tp++] = v & 0xff;
  }
  if (gap >= 0) {
    if (tp === 16) return false;
    const moved = tp - gap;
    out.copyWithin(16 - moved, gap, tp);
    out.fill(0, gap, 16 - moved);
    tp = 16;
  }
  return tp === 16;
}

/** Could buf[s, e) still become an IPv6 address? Characters, groups and length only. */
function ipv6Prefix(buf: Buffer, s: number, e: number): boolean {
  if (e - s > 45) return false;
  if (e - s >= 2 && buf[s] === COLON && buf[s + 1] !== COLON) return false;
  let run = 0;
  let doubled = false;
  let tok = s;
  let dotted = false;
  for (let i = s; i < e; i++) {
    const c = buf[i]!;
    if (c === COLON) {
      if (dotted) return false;
      if (i > s && buf[i - 1] === COLON) {
        if (doubled) return false;
        doubled = true;
      }
      run = 0;
      tok = i + 1;
    } else if (c === DOT) {
      dotted = true;
      run = 0;
    } else if (hexValue(c) < 0 || ++run > 4) return false;
  }
  return !dotted || scanIPv4(buf, tok, e, undefined, 0) >= 0;
}

/** inet_ntop(AF_INET6) as libuv (and so `socket.remoteAddress`) formats it. */
function formatIPv6(b: Uint8Array): string {
  let best = -1;
  let bestLen = 0;
  let cur = -1;
  for (let i = 0; i <= 8; i++) {
    if (i < 8 && b[2 * i] === 0 && b[2 * i + 1] === 0) {
      if (cur < 0) cur = i;
    } else if (cur >= 0) {
      if (i - cur > bestLen) {
        best = cur;
        bestLen = i - cur;
      }
      cur = -1;
    }
  }
  if (bestLen < 2) best = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) s += ':';
      continue;
    }
    if (i !== 0) s += ':';
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && b[10] === 0xff && b[11] === 0xff))) {
      return `${s}${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
    }
    s += ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16);
  }
  return best >= 0 && best + bestLen === 8 ? `${s}:` : s;
}

function parseV2(buf: Buffer): ProxyParse {
  const early = sigMismatch(buf, V2_SIG);
  if (early) return early;
  if (buf.length < 13) return NEED_MORE;
  const vc = buf[12]!;
  if (vc >> 4 !== 2) return fail('malformed', `PROXY v2: version ${vc >> 4}, expected 2`);
  const cmd = vc & 0x0f;
  if (cmd > 1) return fail('malformed', `PROXY v2: unknown command ${cmd}`);
  if (buf.length < 14) return NEED_MORE;
  const fam = buf[13]!;
  let addrLen = 0;
  if (cmd === 1) {
    if (fam === 0x11) addrLen = 12;
    else if (fam === 0x21) addrLen = 36;
    else if (fam === 0x31) addrLen = 216;
    else if (fam === 0x12 || fam === 0x22 || fam === 0x32) return fail('unsupported_family', `PROXY v2: datagram family ${hex(fam)} on a stream connection`);
    else if (fam !== 0x00) return fail('malformed', `PROXY v2: invalid family and transport ${hex(fam)}`);
  }
  if (buf.length < 16) return NEED_MORE;
  const total = 16 + ((buf[14]! << 8) | buf[15]!);
  if (total > V2_MAX) return fail('too_long', `PROXY v2: ${total} bytes, over the ${V2_MAX}-byte limit`);
  if (total - 16 < addrLen) return fail('malformed', `PROXY v2: length ${total - 16} shorter than the ${addrLen}-byte address block`);
  if (buf.length < total) return NEED_MORE;
  if (cmd === 0) return { kind: 'header', header: V2_LOCAL, length: total };
  const tlvs = parseTlvs(buf, 16 + addrLen, total);
  if (typeof tlvs === 'string') return fail('malformed', `PROXY v2: ${tlvs}`);
  let header: ProxyHeader;
  if (fam === 0x11) {
    header = v2Header('tcp4', tlvs, { address: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`, port: buf.readUInt16BE(24) },
      { address: `${buf[20]}.${buf[21]}.${buf[22]}.${buf[23]}`, port: buf.readUInt16BE(26) });
  } else if (fam === 0x21) {
    header = v2Header('tcp6', tlvs, { address: formatIPv6(buf.subarray(16, 32)), port: buf.readUInt16BE(48) },
      { address: formatIPv6(buf.subarray(32, 48)), port: buf.readUInt16BE(50) });
  } else if (fam === 0x31) {
    header = v2Header('unix', tlvs, { address: unixPath(buf, 16), port: 0 }, { address: unixPath(buf, 124), port: 0 });
  } else header = v2Header('unknown', tlvs);
  return { kind: 'header', header, length: total };
}

function v2Header(family: ProxyHeader['family'], tlvs: ProxyTlv[] | undefined, source?: ProxyEndpoint, destination?: ProxyEndpoint): ProxyHeader {
  const h: { -readonly [K in keyof ProxyHeader]: ProxyHeader[K] } = { version: 2, command: 'proxy', family };
  if (source) {
    h.source = source;
    h.destination = destination;
  }
  if (tlvs) h.tlvs = tlvs;
  return h;
}

/** A 108-byte sun_path: up to its NUL; an abstract name (leading NUL) keeps it, as Node writes them. */
function unixPath(buf: Buffer, at: number): string {
  const abstract = buf[at] === 0 ? 1 : 0;
  let e = at + abstract;
  while (e < at + 108 && buf[e] !== 0) e++;
  if (abstract && e === at + 1) return ''; // unnamed
  return (abstract ? '\0' : '') + buf.toString('utf8', at + abstract, e);
}

const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_CRC32C = 0x03;
const PP2_TYPE_UNIQUE_ID = 0x05;
const PP2_TYPE_SSL = 0x20;

/** Checks the TLVs in buf[start, end) and copies them out; a string says what is wrong. */
function parseTlvs(buf: Buffer, start: number, end: number): ProxyTlv[] | string | undefined {
  if (start === end) return undefined;
  for (let p = start; p < end; ) {
    if (p + 3 > end) return `${end - p} trailing bytes, too few for a TLV`;
    const type = buf[p]!;
    const len = (buf[p + 1]! << 8) | buf[p + 2]!;
    const v = p + 3;
    p = v + len;
    if (p > end) return `TLV ${hex(type)} runs past the header`;
    if (type === PP2_TYPE_CRC32C && (len !== 4 || crc32c(buf, end, v) !== buf.readUInt32BE(v))) return 'CRC32C mismatch';
    if (type === PP2_TYPE_UNIQUE_ID && len > 128) return 'UNIQUE_ID over 128 bytes';
    if (type === PP2_TYPE_AUTHORITY && len > 255) return 'AUTHORITY over 255 bytes';
    if (type === PP2_TYPE_SSL) {
      if (len < 5) return 'SSL TLV shorter than 5 bytes';
      for (let q = v + 5; q < p; ) {
        if (q + 3 > p) return 'truncated SSL sub-TLV';
        q += 3 + ((buf[q + 1]! << 8) | buf[q + 2]!);
        if (q > p) return 'SSL sub-TLV runs past its TLV';
      }
    }
  }
  const copy = Buffer.allocUnsafe(end - start);
  buf.copy(copy, 0, start, end);
  const tlvs: ProxyTlv[] = [];
  for (let p = 0; p < copy.length; ) {
    const len = copy.readUInt16BE(p + 1);
    tlvs.push({ type: copy[p]!, value: copy.subarray(p + 3, p + 3 + len) });
    p += 3 + len;
  }
  return tlvs;
}

const CRC_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  CRC_TABLE[n] = c >>> 0;
}

/** CRC32c (Castagnoli) of buf[0, end) with the 4 bytes at `zeroAt` read as zeros. */
function crc32c(buf: Buffer, end: number, zeroAt: number): number {
  let c = 0xffffffff;
  for (let i = 0; i < end; i++) {
    const byte = i >= zeroAt && i < zeroAt + 4 ? 0 : buf[i]!;
    c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Encodes the header Gatehouse sends to a backend: v1 text or v2 binary without TLVs. The
 * family follows the addresses: TCP4 when both are IPv4 or IPv4-mapped IPv6 (unmapped), else
 * TCP6 (an IPv4 one mapped into ::ffff:). An IPv6 zone (`%eth0`) is dropped. With neither
 * address (a health check, say): v1 `PROXY UNKNOWN\r\n`, v2 LOCAL.
 *
 * @throws TypeError when an address is not an IP address or a port not an integer 0-65535.
 * @example
 * upstream.write(encodeProxyHeader({ version: 2,
 *   source: { address: client.remoteAddress!, port: client.remotePort! },
 *   destination: { address: client.localAddress!, port: client.localPort! } }));
 */
export function encodeProxyHeader(h: { version: 1 | 2; source?: ProxyEndpoint; destination?: ProxyEndpoint }): Buffer {
  if (!h.source || !h.destination) {
    if (h.source || h.destination) throw new TypeError('PROXY header: source and destination go together');
    if (h.version === 1) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    const local = Buffer.alloc(16);
    V2_SIG.copy(local, 0);
    local[12] = 0x20;
    return local;
  }
  const src = toBytes(h.source);
  const dst = toBytes(h.destination);
  const v4 = isMapped(src) && isMapped(dst);
  if (h.version === 1) {
    const fmt = (b: Uint8Array) => (v4 ? `${b[12]}.${b[13]}.${b[14]}.${b[15]}` : formatIPv6(b));
    return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${fmt(src)} ${fmt(dst)} ${h.source.port} ${h.destination.port}\r\n`, 'latin1');
  }
  const out = Buffer.allocUnsafe(v4 ? 28 : 52);
  V2_SIG.copy(out, 0);
  out[12] = 0x21;
  out[13] = v4 ? 0x11 : 0x21;
  out.writeUInt16BE(v4 ? 12 : 36, 14);
  if (v4) {
    out.set(src.subarray(12), 16);
    out.set(dst.subarray(12), 20);
  } else {
    out.set(src, 16);
    out.set(dst, 32);
  }
  out.writeUInt16BE(h.source.port, v4 ? 24 : 48);
  out.writeUInt16BE(h.destination.port, v4 ? 26 : 50);
  return out;
}

/** An endpoint's address as 16 bytes (IPv4 mapped into ::ffff:), its port checked. */
function toBytes(ep: ProxyEndpoint): Uint8Array {
  if (!Number.isInteger(ep.port) || ep.port < 0 || ep.port > 65535) throw new TypeError(`PROXY header: invalid port ${ep.port}`);
  const zone = ep.address.indexOf('%');
  const text = Buffer.from(zone < 0 ? ep.address : ep.address.slice(0, zone), 'utf8');
  const b = new Uint8Array(16);
  if (scanIPv4(text, 0, text.length, b, 12) === 1) {
    b[10] = b[11] = 0xff;
    return b;
  }
  if (!parseIPv6(text, 0, text.length, b)) throw new TypeError(`PROXY header: invalid address ${JSON.stringify(ep.address)}`);
  return b;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}
