/**
 * The request head (RFC 9112 §3 and §6): request line, field lines and the framing decision.
 * Every ambiguity a front end and a back end could resolve differently (the request smuggling
 * forms) is refused here, before any byte reaches a backend.
 */
import { HOST, METHODS, TARGET, TOKEN, fail } from './chars.ts';
import { contentLengthOf, listHas, parseFields } from './fields.ts';

/**
 * A parsed request head. `headers` is a flat `[name, value, name, value, ...]` array with
 * lowercase names in arrival order: the proxy walks it once to re-serialise, dropping
 * hop-by-hop fields, without an object per header.
 *
 * @example
 * if (head.expectContinue) socket.write('HTTP/1.1 100 Continue\r\n\r\n');
 */
export interface RequestHead {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: 0 | 1;
  headers: string[];
  /** The Host value (`undefined` only in an HTTP/1.0 request without one). */
  host: string | undefined;
  /** The Content-Length, or -1 when the body is chunked or absent. */
  contentLength: number;
  chunked: boolean;
  /** The connection stays open after this exchange (version and Connection tokens). */
  keepAlive: boolean;
  /** Upgrade requested (`Upgrade` plus `Connection: upgrade`), or a CONNECT. */
  upgrade: boolean;
  /** `Expect: 100-continue` from an HTTP/1.1 client. */
  expectContinue: boolean;
}

const SP = 32;

/**
 * Parses a complete head, `buf[start, end)` where `end` is just past the final empty line,
 * `lineEnd` the index of the CR closing the request line. Throws `HttpParseError` with the
 * status of the rule that failed.
 *
 * @example
 * const b = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
 * parseHead(b, 0, 14, b.length).method; // 'GET'
 */
export function parseHead(buf: Buffer, start: number, lineEnd: number, end: number): RequestHead {
  // Request line: method SP request-target SP HTTP-version, single spaces only.
  let p = start;
  while (p < lineEnd && TOKEN[buf[p]] === 1) p++;
  if (p === start || buf[p] !== SP) throw fail('bad_request', 'invalid method');
  const method = buf.toString('latin1', start, p);
  const targetStart = ++p;
  while (p < lineEnd && TARGET[buf[p]] === 1) p++;
  if (p === targetStart || buf[p] !== SP) throw fail('bad_request', 'invalid request-target');
  const target = buf.toString('latin1', targetStart, p);
  const versionMinor = parseVersion(buf, p + 1, lineEnd);
  if (!METHODS.has(method)) throw fail('not_implemented', `unknown method ${method}`);
  checkTargetForm(method, target);

  const headers: string[] = [];
  parseFields(buf, lineEnd + 2, end - 2, headers);

  let host: string | undefined;
  let hostCount = 0;
  let contentLength = -1;
  let te: string | undefined;
  let connection = '';
  let upgradeField = false;
  let expectContinue = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    const value = headers[i + 1];
    switch (name) {
      case 'host':
        hostCount++;
        host = value;
        break;
      case 'content-length':
        if (contentLength !== -1) throw fail('bad_request', 'more than one Content-Length');
        contentLength = parseContentLength(value);
        break;
      case 'transfer-encoding':
        te = te === undefined ? value : `${te},${value}`;
        break;
      case 'connection':
        connection = connection === '' ? value : `${connection},${value}`;
        break;
      case 'upgrade':
        upgradeField = true;
        break;
      case 'expect':
        if (value.length === 12 && value.toLowerCase() === '100-continue') expectContinue = true;
        break;
    }
  }
  if (hostCount > 1) throw fail('bad_request', 'duplicate Host');
  if (hostCount === 0 && versionMinor === 1) throw fail('bad_request', 'missing Host');
  if (host !== undefined) checkHost(host);

  let chunked = false;
  if (te !== undefined) {
    if (versionMinor === 0) throw fail('bad_request', 'Transfer-Encoding in an HTTP/1.0 request');
    if (contentLength !== -1) throw fail('bad_request', 'Transfer-Encoding with Content-Length');
    checkTransferEncoding(te);
    chunked = true;
  }
  const close = listHas(connection, 'close');
  return {
    method,
    target,
    versionMinor,
    headers,
    host,
    contentLength,
    chunked,
    keepAlive: versionMinor === 1 ? !close : !close && listHas(connection, 'keep-alive'),
    upgrade: method === 'CONNECT' || (upgradeField && listHas(connection, 'upgrade')),
    // RFC 9110 §10.1.1: a server ignores 100-continue from an HTTP/1.0 client.
    expectContinue: expectContinue && versionMinor === 1,
  };
}

/** `HTTP/1.0` or `HTTP/1.1`; another `HTTP/d.d` is 505, anything else 400. */
function parseVersion(buf: Buffer, p: number, lineEnd: number): 0 | 1 {
  if (
    lineEnd - p !== 8 || buf[p] !== 0x48 || buf[p + 1] !== 0x54 || buf[p + 2] !== 0x54 ||
    buf[p + 3] !== 0x50 || buf[p + 4] !== 0x2f || buf[p + 6] !== 0x2e ||
    !isDigit(buf[p + 5]) || !isDigit(buf[p + 7])
  ) {
    throw fail('bad_request', 'invalid HTTP version');
  }
  if (buf[p + 5] === 0x31 && (buf[p + 7] === 0x30 || buf[p + 7] === 0x31)) return buf[p + 7] === 0x31 ? 1 : 0;
  throw fail('http_version_not_supported', 'HTTP version not supported');
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** RFC 9112 §3.2: `*` only for OPTIONS, authority-form only (and always) for CONNECT. */
function checkTargetForm(method: string, target: string): void {
  const c = target.charCodeAt(0);
  if (method === 'CONNECT') {
    const colon = target.lastIndexOf(':');
    if (colon <= 0 || colon === target.length - 1) throw fail('bad_request', 'CONNECT needs host:port');
    for (let i = 0; i < target.length; i++) {
      if (HOST[target.charCodeAt(i)] !== 1) throw fail('bad_request', 'invalid authority');
    }
    for (let i = colon + 1; i < target.length; i++) {
      if (!isDigit(target.charCodeAt(i))) throw fail('bad_request', 'invalid port');
    }
    return;
  }
  if (c === 0x2f) return; // origin-form
  if (target === '*') {
    if (method !== 'OPTIONS') throw fail('bad_request', 'asterisk-form is for OPTIONS only');
    return;
  }
  // absolute-form: letters only in the scheme (llhttp refuses digits, `+`, `-`, `.` there).
  let i = 0;
  const n = target.length;
  while (i < n) {
    const ch = target.charCodeAt(i) | 0x20;
    if (ch < 0x61 || ch > 0x7a) break;
    i++;
  }
  if (i === 0 || !target.startsWith('://', i)) throw fail('bad_request', 'invalid request-target');
  // The authority: host chars only (no userinfo `@`), then the end, a path or a query.
  let k = i + 3;
  while (k < n && HOST[target.charCodeAt(k)] === 1) k++;
  const c2 = target.charCodeAt(k);
  if (k === i + 3 || (k < n && c2 !== 0x2f && c2 !== 0x3f)) throw fail('bad_request', 'invalid authority');
}

function checkHost(host: string): void {
  for (let i = 0; i < host.length; i++) {
    if (HOST[host.charCodeAt(i)] !== 1) throw fail('bad_request', 'invalid Host');
  }
}

/** Digits only: no sign, no space, no list (`1, 2` is 400 like a second field). */
function parseContentLength(value: string): number {
  const v = contentLengthOf(value);
  if (v === -1) throw fail('bad_request', 'invalid Content-Length');
  return v;
}

/**
 * The final coding must be `chunked` (else the request length is unknowable: 400), and the
 * gateway implements no other transfer coding (it frames bodies itself), so any other coding
 * before it is 501. Empty list elements and a repeated `chunked` are 400.
 */
function checkTransferEncoding(te: string): void {
  const parts = te.split(',');
  const last = parts.length - 1;
  for (let i = 0; i <= last; i++) {
    const raw = parts[i];
    // Trim SP and HTAB only: String#trim would also drop U+00A0, an obs-text byte here.
    let s = 0;
    let e = raw.length;
    while (s < e && (raw.charCodeAt(s) === 32 || raw.charCodeAt(s) === 9)) s++;
    while (e > s && (raw.charCodeAt(e - 1) === 32 || raw.charCodeAt(e - 1) === 9)) e--;
    if (s === e) throw fail('bad_request', 'empty transfer coding');
    for (let k = s; k < e; k++) {
      if (TOKEN[raw.charCodeAt(k)] !== 1) throw fail('bad_request', 'invalid transfer coding');
    }
    const coding = raw.slice(s, e).toLowerCase();
    if (i === last) {
      if (coding !== 'chunked') throw fail('bad_request', 'final transfer coding is not chunked');
    } else if (coding === 'chunked') {
      throw fail('bad_request', 'chunked applied more than once');
    } else {
      throw fail('not_implemented', `transfer coding ${coding} not implemented`);
    }
  }
}
