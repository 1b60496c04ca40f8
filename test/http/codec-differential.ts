/**
 * Differential harness for the codec: runs the same bytes through Node's own parser (llhttp,
 * driven directly through the `HTTPParser` binding that `node:http` uses) and through
 * `RequestParser`, and generates request-smuggling mutations of valid requests with fast-check.
 * Used by test/http/codec-differential.test.ts and scripts/http-differential.ts; its llhttp
 * binding, `lenientOver` and generators also by test/http/codec-response-differential.test.ts.
 */
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { HttpParseError, ParseEvent, RequestParser } from '../../src/http/codec/index.ts';

/** The `HTTPParser` binding of `_http_common`, as far as the harnesses use it. */
export interface HTTPParserCtor {
  new (): LlParser;
  REQUEST: number;
  RESPONSE: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
}
export interface LlParser {
  [k: number]: unknown;
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(b: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
}

// `_http_common` is a public-but-undocumented module (no --expose-internals needed): it hands
// out the exact llhttp build and flags that node:http servers use.
const common = createRequire(import.meta.url)('_http_common') as { HTTPParser: HTTPParserCtor; methods: string[] };
export const { HTTPParser, methods } = common;

/** One message as either parser saw it. */
export interface Message {
  method: string;
  target: string;
  headers: string[];
  body: string;
}

/** What a parser made of a whole input: the complete messages, and whether it refused. */
export interface Outcome {
  messages: Message[];
  /** Heads seen (a message whose head was accepted but whose body did not complete counts). */
  heads: number;
  error: string | undefined;
}

/** What `lenientOver` compares: request and response outcomes alike. */
type Counted = { messages: unknown[]; heads: number; error: string | undefined };

/** Parses `input` with llhttp as a node:http server would (strict, 16 KiB head limit). */
export function runLlhttp(input: Buffer): Outcome {
  const p = new HTTPParser();
  const out: Outcome = { messages: [], heads: 0, error: undefined };
  let cur: Message | undefined;
  let pending: string[] = [];
  let pendingUrl = '';
  // Node flushes long heads early through kOnHeaders(headers, url); url is then absent below.
  p[HTTPParser.kOnHeaders] = (h: string[], url: string) => { pending.push(...h); pendingUrl += url; };
  p[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, h: string[] | undefined, m: number, url: string) => {
    const all = h === undefined ? pending : pending.concat(h);
    pending = [];
    const headers: string[] = [];
    for (let i = 0; i < all.length; i += 2) headers.push(all[i].toLowerCase(), all[i + 1]);
    cur = { method: methods[m], target: pendingUrl + (url ?? ''), headers, body: '' };
    pendingUrl = '';
    out.heads++;
    return 0;
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => { cur!.body += b.toString('latin1'); };
  p[HTTPParser.kOnMessageComplete] = () => { pending = []; pendingUrl = ''; out.messages.push(cur!); };
  p[HTTPParser.kOnExecute] = () => {};
  p.initialize(HTTPParser.REQUEST, {}, 16 * 1024, 0);
  const r = p.execute(input);
  if (r instanceof Error) out.error = (r as Error & { code?: string }).code ?? r.message;
  p.close();
  return out;
}

/** Parses `input` with the codec, fed in pieces cut at `splits` (offsets, any order). */
export function runCodec(input: Buffer, splits: number[] = []): Outcome {
  const parser = new RequestParser();
  const out: Outcome = { messages: [], heads: 0, error: undefined };
  const cuts = [...new Set(splits.filter((s) => s > 0 && s < input.length))].sort((a, b) => a - b);
  cuts.push(input.length);
  let from = 0;
  let cur: Message | undefined;
  try {
    for (const to of cuts) {
      // Copy each piece: the parser keeps views, as it would of a socket's chunks.
      parser.feed(Buffer.from(input.subarray(from, to)));
      from = to;
      for (let ev = parser.next(); ev !== ParseEvent.NeedMore; ev = parser.next()) {
        if (ev === ParseEvent.Head) {
          const h = parser.head!;
          cur = { method: h.method, target: h.target, headers: h.headers, body: '' };
          out.heads++;
        } else if (ev === ParseEvent.Body) cur!.body += parser.body.toString('latin1');
        else if (ev === ParseEvent.End) out.messages.push(cur!);
        else return out; // Paused or Closed: llhttp stops there too
      }
    }
  } catch (err) {
    if (!(err instanceof HttpParseError)) throw err;
    out.error = err.code;
  }
  return out;
}

/**
 * The property: when llhttp refuses, the codec must refuse no later. It may not complete the
 * message llhttp failed in, nor emit that message's head if llhttp failed inside the head.
 * Returns a description of the leniency, or undefined.
 */
export function lenientOver(ll: Counted, codec: Counted): string | undefined {
  if (ll.error === undefined) return undefined;
  if (codec.messages.length > ll.messages.length) {
    return `llhttp refused (${ll.error}) message ${ll.messages.length + 1} but the codec completed it`;
  }
  if (codec.heads > ll.heads) return `llhttp refused (${ll.error}) a head the codec accepted`;
  return undefined;
}

export const TE_FORMS = [
  'chunked', 'chunked, identity', ' chunked', 'xchunked', 'chunked ', 'gzip, chunked', 'chunked, chunked',
  'CHUNKED', 'identity', 'chunked\t', '\tchunked', ',chunked', 'chunked,', 'chunked;q=1', 'chun ked', 'gzip',
];
export const CHUNK_SIZES = ['0x10', '-1', '+1', 'fffffffffffffffff', ' 1', '1 ', '1;', '1;a=', '1;a="b', '1;a=b', '01', 'g', ''];
const VERSIONS = ['HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.1 ', 'HTTP/1', 'HTTP/11.1', 'HTTP/1.0'];
const METHODS_GEN = ['GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'CONNECT', 'PATCH', 'FOO', 'get'];
const TARGETS = ['/', '/a/b?c=d', '*', 'http://x.test/p', 'x.test:443', '/%zz', '/a#f', '/ä'];

const tokenChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_!#$%&\'*+.^`|~');
const anyByte = fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c));

export const header = fc.tuple(
  fc.array(fc.oneof({ weight: 9, arbitrary: tokenChar }, { weight: 1, arbitrary: anyByte }), { minLength: 1, maxLength: 8 }),
  fc.array(fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...'abc 123\t=,;/"') }, { weight: 1, arbitrary: anyByte }), { maxLength: 10 }),
).map(([n, v]) => [n.join(''), v.join('')] as [string, string]);

/** A valid request's parts, before mutation. */
const request = fc.record({
  method: fc.constantFrom<string>('GET', 'POST', 'PUT', 'DELETE', 'OPTIONS'),
  target: fc.constantFrom<string>('/', '/a/b?c=d', '/x%20y', 'http://h.test/p'),
  minor: fc.constantFrom(0, 1),
  headers: fc.array(fc.tuple(fc.constantFrom('accept', 'x-a', 'User-Agent', 'Cookie'), fc.stringMatching(/^[a-z0-9 =;,]{0,12}$/)), { maxLength: 4 }),
  body: fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x')),
  framing: fc.constantFrom('none', 'length', 'chunked'),
  chunks: fc.integer({ min: 1, max: 3 }),
  trailer: fc.boolean(),
});
type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;

/** Serialises a request as valid HTTP/1.x (valid for both parsers). */
export function serialise(r: Req, extra: [string, string][] = [], opts: { version?: string; host?: boolean } = {}): string {
  const minor = r.framing === 'chunked' ? 1 : r.minor;
  let s = `${r.method} ${r.target} ${opts.version ?? `HTTP/1.${minor}`}\r\n`;
  if (opts.host !== false) s += 'Host: h.test\r\n';
  if (minor === 0) s += 'Connection: keep-alive\r\n';
  for (const [n, v] of r.headers) s += `${n}: ${v.trim()}\r\n`;
  for (const [n, v] of extra) s += `${n}:${v}\r\n`;
  if (r.framing === 'length') return `${s}Content-Length: ${r.body.length}\r\n\r\n${r.body}`;
  if (r.framing === 'none') return `${s}\r\n`;
  s += 'Transfer-Encoding: chunked\r\n\r\n';
  const step = Math.ceil(r.body.length / r.chunks) || 1;
  for (let i = 0; i < r.body.length; i += step) {
    const part = r.body.slice(i, i + step);
    s += `${part.length.toString(16)}\r\n${part}\r\n`;
  }
  return `${s}0\r\n${r.trailer ? 'X-Sum: 1\r\n' : ''}\r\n`;
}

/** Valid requests (1 to 3 pipelined), as bytes, with split points for the codec. */
export const validInput = fc.tuple(fc.array(request, { minLength: 1, maxLength: 3 }), fc.array(fc.nat(400), { maxLength: 4 }))
  .map(([rs, splits]) => ({ input: Buffer.from(rs.map((r) => serialise(r)).join(''), 'latin1'), splits }));

/** The framing and field mutations that requests and responses share (the smuggling forms). */
export const framingMutations = [
  fc.record({ kind: fc.constant('clte' as const) }),
  fc.record({ kind: fc.constant('doublecl' as const), a: fc.nat(3), b: fc.nat(3), oneField: fc.boolean() }),
  fc.record({ kind: fc.constant('te' as const), te: fc.constantFrom(...TE_FORMS) }),
  fc.record({ kind: fc.constant('fold' as const) }),
  fc.record({ kind: fc.constant('spaceColon' as const) }),
  fc.record({ kind: fc.constant('chunkSize' as const), size: fc.constantFrom(...CHUNK_SIZES) }),
] as const;

const mutation = fc.oneof(
  ...framingMutations,
  fc.record({ kind: fc.constant('version' as const), v: fc.constantFrom(...VERSIONS) }),
  fc.record({ kind: fc.constant('host' as const), n: fc.constantFrom(0, 2) }),
  fc.record({ kind: fc.constant('line' as const), method: fc.constantFrom(...METHODS_GEN), target: fc.constantFrom(...TARGETS) }),
  fc.record({ kind: fc.constant('header' as const), h: header }),
  fc.record({ kind: fc.constant('bytes' as const), edits: fc.array(fc.tuple(fc.nat(), fc.constantFrom('\r', '\n', '\0', ' ', '\t', ':', '\x7f', '\xff', ''), fc.boolean()), { minLength: 1, maxLength: 3 }) }),
  fc.record({ kind: fc.constant('random' as const), edits: fc.array(fc.tuple(fc.nat(), anyByte, fc.boolean()), { minLength: 1, maxLength: 3 }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(r: Req, m: Mutation): string {
  switch (m.kind) {
    case 'clte': return serialise({ ...r, framing: 'chunked' }, [['Content-Length', ' 3']]);
    case 'doublecl': {
      const v = m.oneField ? [[`Content-Length`, ` ${m.a}, ${m.b}`]] : [['Content-Length', ` ${m.a}`], ['Content-Length', ` ${m.b}`]];
      return serialise({ ...r, framing: 'none' }, v as [string, string][]) + 'abc';
    }
    case 'te': return serialise({ ...r, framing: 'none' }, [['Transfer-Encoding', m.te]]) + '3\r\nabc\r\n0\r\n\r\n';
    case 'fold': return serialise(r, [['X-Fold', ' a\r\n b']]);
    case 'spaceColon': return serialise(r).replace('Host:', 'Host :');
    case 'chunkSize': return serialise({ ...r, framing: 'none', minor: 1 }, [['Transfer-Encoding', ' chunked']]) + `${m.size}\r\nx\r\n0\r\n\r\n`;
    case 'version': return serialise(r, [], { version: m.v });
    case 'host': return serialise(r, m.n === 2 ? [['Host', ' b.test']] : [], { host: m.n !== 0 });
    case 'line': return serialise({ ...r, method: m.method, target: m.target });
    case 'header': return serialise(r, [m.h]);
    case 'bytes':
    case 'random': {
      let s = serialise(r);
      for (const [at, ch, replace] of m.edits) {
        const i = at % (s.length + 1);
        s = s.slice(0, i) + ch + s.slice(replace ? i + 1 : i);
      }
      return s;
    }
  }
}

/** Mutated requests (smuggling forms, bad bytes), possibly after a valid one, with split points. */
export const mutatedInput = fc.tuple(fc.option(request, { nil: undefined }), request, mutation, fc.array(fc.nat(400), { maxLength: 4 }))
  .map(([before, r, m, splits]) => ({
    input: Buffer.from((before ? serialise(before) : '') + mutate(r, m), 'latin1'),
    splits,
  }));
