/**
 * The chunked transfer coding (RFC 9112 §7.1) as a resumable state machine over the parser's
 * buffer. Data comes out as `[start, end)` offsets into that buffer, so the parser hands out
 * subarray views and nothing is copied.
 */
import { HEX, TOKEN, fail } from './chars.ts';
import { parseFields } from './fields.ts';

/** The longest chunk-size line (size, extensions, CRLF) accepted: bounds extension abuse. */
export const MAX_CHUNK_LINE = 4096;
/** 13 hex digits hold 2^52, still exact in a double; longer sizes are refused. */
const MAX_SIZE_DIGITS = 13;

const CR = 13;
const LF = 10;
const CRLF2 = Buffer.from('\r\n\r\n');

/** What one `ChunkedDecoder.step` call produced. */
export const ChunkStep = { NeedMore: 0, Data: 1, Done: 2 } as const;
/** @example if (step === ChunkStep.Data) use(buf.subarray(dec.dataStart, dec.dataEnd)); */
export type ChunkStep = (typeof ChunkStep)[keyof typeof ChunkStep];

const SIZE = 0;
const DATA = 1;
const DATA_CRLF = 2;
const TRAILERS = 3;
const DONE = 4;

/**
 * Decodes one chunked body. After `step` returns, `pos` is where parsing stopped; on `Data`
 * the bytes are `buf[dataStart, dataEnd)`; on `Done`, `trailers` holds the trailer fields
 * (same rules and layout as request headers).
 *
 * @example
 * const dec = new ChunkedDecoder(16384, 0);
 * const b = Buffer.from('3\r\nabc\r\n0\r\n\r\n');
 * let pos = 0, step;
 * while ((step = dec.step(b, pos, b.length)) !== ChunkStep.NeedMore) {
 *   pos = dec.pos;
 *   if (step === ChunkStep.Done) break;
 * }
 */
export class ChunkedDecoder {
  pos = 0;
  dataStart = 0;
  dataEnd = 0;
  trailers: string[] = [];
  private state = SIZE;
  private remaining = 0;
  private total = 0;
  private readonly maxTrailerSize: number;
  private readonly maxBodySize: number;

  /** `maxBodySize` 0 means no limit. */
  constructor(maxTrailerSize: number, maxBodySize: number) {
    this.maxTrailerSize = maxTrailerSize;
    this.maxBodySize = maxBodySize;
  }

  /** Advances over `buf[pos, end)`; throws `HttpParseError` on a framing error. */
  step(buf: Buffer, pos: number, end: number): ChunkStep {
    for (;;) {
      switch (this.state) {
        case SIZE: {
          const lf = buf.indexOf(LF, pos);
          if (lf < 0 || lf >= end) {
            if (end - pos >= MAX_CHUNK_LINE) throw fail('bad_request', 'chunk-size line too long');
            return this.stop(pos, ChunkStep.NeedMore);
          }
          if (lf + 1 - pos > MAX_CHUNK_LINE) throw fail('bad_request', 'chunk-size line too long');
          if (lf === pos || buf[lf - 1] !== CR) throw fail('bad_request', 'bare LF in chunk-size line');
          const size = this.parseSizeLine(buf, pos, lf - 1);
          pos = lf + 1;
          if (size === 0) {
            this.state = TRAILERS;
          } else {
            this.total += size;
            if (this.maxBodySize > 0 && this.total > this.maxBodySize) throw fail('body_too_large', 'body too large');
            this.remaining = size;
            this.state = DATA;
          }
          break;
        }
        case DATA: {
          if (pos >= end) return this.stop(pos, ChunkStep.NeedMore);
          const n = Math.min(this.remaining, end - pos);
          this.dataStart = pos;
          this.dataEnd = pos + n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = DATA_CRLF;
          return this.stop(pos + n, ChunkStep.Data);
        }
        case DATA_CRLF:
          if (end - pos < 2) {
            if (pos < end && buf[pos] !== CR) throw fail('bad_request', 'chunk data not followed by CRLF');
            return this.stop(pos, ChunkStep.NeedMore);
          }
          if (buf[pos] !== CR || buf[pos + 1] !== LF) throw fail('bad_request', 'chunk data not followed by CRLF');
          pos += 2;
          this.state = SIZE;
          break;
        case TRAILERS: {
          if (end - pos < 2) return this.stop(pos, ChunkStep.NeedMore);
          if (buf[pos] === CR && buf[pos + 1] === LF) {
            this.state = DONE;
            return this.stop(pos + 2, ChunkStep.Done);
          }
          const e = buf.indexOf(CRLF2, pos);
          if (e < 0 || e + 4 > end) {
            if (end - pos > this.maxTrailerSize) throw fail('headers_too_large', 'trailers too large');
            return this.stop(pos, ChunkStep.NeedMore);
          }
          if (e + 4 - pos > this.maxTrailerSize) throw fail('headers_too_large', 'trailers too large');
          parseFields(buf, pos, e + 2, this.trailers);
          this.state = DONE;
          return this.stop(e + 4, ChunkStep.Done);
        }
        default:
          return this.stop(pos, ChunkStep.Done);
      }
    }
  }

  private stop(pos: number, step: ChunkStep): ChunkStep {
    this.pos = pos;
    return step;
  }

  /** chunk-size (hex) then `;name[=token|quoted-string]` extensions with no whitespace. */
  private parseSizeLine(buf: Buffer, p: number, e: number): number {
    let size = 0;
    const start = p;
    while (p < e && HEX[buf[p]] !== 255) size = size * 16 + HEX[buf[p++]];
    if (p === start || p - start > MAX_SIZE_DIGITS) throw fail('bad_request', 'invalid chunk size');
    while (p < e) {
      if (buf[p++] !== 0x3b) throw fail('bad_request', 'invalid chunk extension');
      const nameStart = p;
      while (p < e && TOKEN[buf[p]] === 1) p++;
      if (p === nameStart) throw fail('bad_request', 'invalid chunk extension');
      if (p < e && buf[p] === 0x3d) {
        p++;
        p = buf[p] === 0x22 && p < e ? skipQuoted(buf, p + 1, e) : skipToken(buf, p, e);
      }
    }
    return size;
  }
}

function skipToken(buf: Buffer, p: number, e: number): number {
  const s = p;
  while (p < e && TOKEN[buf[p]] === 1) p++;
  if (p === s) throw fail('bad_request', 'invalid chunk extension');
  return p;
}

/** A quoted-string body after the opening quote: qdtext or quoted-pair, up to the closing quote. */
function skipQuoted(buf: Buffer, p: number, e: number): number {
  while (p < e) {
    const c = buf[p++];
    if (c === 0x22) return p;
    if (c === 0x5c) {
      if (p >= e || (buf[p] < 0x20 && buf[p] !== 9) || buf[p] === 0x7f) throw fail('bad_request', 'invalid chunk extension');
      p++;
    } else if ((c < 0x20 && c !== 9) || c === 0x7f) {
      throw fail('bad_request', 'invalid chunk extension');
    }
  }
  throw fail('bad_request', 'unterminated quoted chunk extension');
}
