/**
 * Header field lines (RFC 9112 §5), shared by the request head and chunked trailers. One pass
 * over the bytes, one lookup per byte; names are lowercased once so that the proxy can match
 * and drop hop-by-hop fields with plain string compares when it re-serialises them.
 */
import { FIELD_VALUE, TOKEN, fail } from './chars.ts';

/** `Buffer#latin1Slice`: what `toString('latin1', s, e)` calls after its argument checks. */
type Latin1 = Buffer & { latin1Slice(start: number, end: number): string };

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

/**
 * Parses the field lines in `buf[pos, end)`, where `end` is just past the CRLF that closes the
 * last line (the empty line is not included), appending `name, value` pairs to `out`: names in
 * lowercase, values in latin1 with leading and trailing whitespace removed.
 * Refuses (400) obs-fold, whitespace before the colon, an empty or non-token name, a CTL other
 * than HTAB in a value (NUL included), a bare CR and a bare LF.
 *
 * @example
 * const out: string[] = [];
 * parseFields(Buffer.from('Host: a\r\nX-A:  1 \r\n'), 0, 20, out); // ['host', 'a', 'x-a', '1']
 */
export function parseFields(buf: Buffer, pos: number, end: number, out: string[]): void {
  while (pos < end) {
    const c = buf[pos];
    if (c === SP || c === HTAB) throw fail('bad_request', 'obsolete line folding');
    const nameStart = pos;
    while (pos < end && TOKEN[buf[pos]] === 1) pos++;
    if (pos === nameStart) throw fail('bad_request', 'invalid header name');
    const b = buf[pos];
    if (b !== COLON) {
      throw fail('bad_request', b === SP || b === HTAB ? 'whitespace before colon' : 'invalid header name');
    }
    const nameEnd = pos++;
    while (pos < end && (buf[pos] === SP || buf[pos] === HTAB)) pos++;
    const valueStart = pos;
    let valueEnd = pos;
    // Scan to the CR; remember the last non-whitespace byte to trim trailing OWS.
    for (;;) {
      if (pos >= end) throw fail('bad_request', 'unterminated header line');
      const v = buf[pos];
      if (v === CR) break;
      if (FIELD_VALUE[v] !== 1) {
        throw fail('bad_request', v === LF ? 'bare LF in header' : 'invalid character in header value');
      }
      pos++;
      if (v !== SP && v !== HTAB) valueEnd = pos;
    }
    if (pos + 1 >= end || buf[pos + 1] !== LF) throw fail('bad_request', 'bare CR in header');
    // Strings come from latin1Slice directly: toString's encoding dispatch was 14% of a parse.
    const name = (buf as Latin1).latin1Slice(nameStart, nameEnd).toLowerCase();
    // llhttp refuses `chunked<HTAB>` (it trims only SP): trailing HTAB in TE is 400 here too.
    if (valueEnd < pos && name === 'transfer-encoding') {
      const tab = buf.indexOf(HTAB, valueEnd);
      if (tab >= 0 && tab < pos) throw fail('bad_request', 'HTAB after Transfer-Encoding');
    }
    pos += 2;
    out.push(name, (buf as Latin1).latin1Slice(valueStart, valueEnd));
  }
}

/**
 * Tells whether the comma-separated list `value` holds `token` (case-insensitive, `token`
 * given in lowercase), as for `Connection`, without splitting the string.
 *
 * @example
 * listHas('Keep-Alive, Upgrade', 'upgrade'); // true
 */
export function listHas(value: string, token: string): boolean {
  const n = value.length;
  let i = 0;
  while (i < n) {
    while (i < n && (value.charCodeAt(i) === SP || value.charCodeAt(i) === HTAB || value.charCodeAt(i) === 44)) i++;
    const start = i;
    while (i < n && value.charCodeAt(i) !== 44) i++;
    let e = i;
    while (e > start && (value.charCodeAt(e - 1) === SP || value.charCodeAt(e - 1) === HTAB)) e--;
    if (e - start === token.length) {
      let k = 0;
      // ASCII case fold: token is lowercase, so OR 0x20 on letters only.
      while (k < token.length) {
        let ch = value.charCodeAt(start + k);
        if (ch >= 65 && ch <= 90) ch |= 0x20;
        if (ch !== token.charCodeAt(k)) break;
        k++;
      }
      if (k === token.length) return true;
    }
  }
  return false;
}

/**
 * Content-Length as the codec accepts it: digits only (no sign, space or list), at most 15 of
 * them so the value is exact in a double. Returns -1 when the value is not that.
 *
 * @example
 * contentLengthOf('42'); // 42
 * contentLengthOf('1, 1'); // -1
 */
export function contentLengthOf(value: string): number {
  const n = value.length;
  if (n === 0 || n > 15) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const d = value.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

/**
 * What `codingsOf` found in a Transfer-Encoding list.
 *
 * @example
 * codingsOf('gzip') === Codings.NotChunked; // a response read until the close
 */
export const Codings = {
  /** Empty element, a non-token, or `chunked` other than once at the end. */
  Invalid: -1,
  /** Exactly `chunked`. */
  Chunked: 0,
  /** Other codings, then `chunked` last. */
  OtherThenChunked: 1,
  /** The final coding is not `chunked` (and `chunked` appears nowhere). */
  NotChunked: 2,
} as const;
/** @example if (codingsOf(te) === Codings.Chunked) decodeChunks(); */
export type Codings = (typeof Codings)[keyof typeof Codings];

/**
 * Classifies a Transfer-Encoding list (field lines joined by commas) in one pass without
 * splitting: elements are tokens between optional SP/HTAB, compared case-insensitively.
 *
 * @example
 * codingsOf('gzip, chunked') === Codings.OtherThenChunked;
 */
export function codingsOf(te: string): Codings {
  const n = te.length;
  let i = 0;
  let count = 0;
  let lastChunked = false;
  for (;;) {
    while (i < n && (te.charCodeAt(i) === SP || te.charCodeAt(i) === HTAB)) i++;
    const s = i;
    while (i < n && TOKEN[te.charCodeAt(i)] === 1) i++;
    if (i === s) return Codings.Invalid;
    // A coding already seen as `chunked` that is not last: chunked applied twice or not final.
    if (lastChunked) return Codings.Invalid;
    lastChunked = i - s === 7 && isChunked(te, s);
    count++;
    while (i < n && (te.charCodeAt(i) === SP || te.charCodeAt(i) === HTAB)) i++;
    if (i === n) break;
    if (te.charCodeAt(i) !== 44) return Codings.Invalid;
    i++;
  }
  if (!lastChunked) return Codings.NotChunked;
  return count === 1 ? Codings.Chunked : Codings.OtherThenChunked;
}

/** `te[s, s+7)` is `chunked` in any case, compared in place (no slice). */
function isChunked(te: string, s: number): boolean {
  for (let k = 0; k < 7; k++) {
    let ch = te.charCodeAt(s + k);
    if (ch >= 65 && ch <= 90) ch |= 0x20;
    if (ch !== CHUNKED.charCodeAt(k)) return false;
  }
  return true;
}

const CHUNKED = 'chunked';
