/**
 * The response parser against llhttp's response mode (the `HTTPParser` that node:http clients
 * use, driven as `_http_client` drives it: bodies skipped for HEAD and 1xx): never more lenient
 * on generated invalid responses, and the same status, reason, headers and bodies on valid ones.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AnswerTo, HttpParseError, ParseEvent, ResponseParser } from '../../src/http/codec/index.ts';
import { HTTPParser, framingMutations, header, lenientOver } from './codec-differential.ts';

interface Msg { status: number; reason: string; headers: string[]; body: string }
interface Outcome { messages: Msg[]; heads: number; error: string | undefined }

/** llhttp on `input` answering requests `methods`, then FIN when `fin`. */
function runLlhttp(input: Buffer, methods: string[], fin: boolean): Outcome {
  const p = new HTTPParser();
  const out: Outcome = { messages: [], heads: 0, error: undefined };
  let cur: Msg | undefined;
  let answered = 0;
  let pending: string[] = [];
  p[HTTPParser.kOnHeaders] = (h: string[]) => { pending.push(...h); };
  p[HTTPParser.kOnHeadersComplete] = (_a: number, _b: number, h: string[] | undefined, _m: unknown, _u: unknown, status: number, reason: string) => {
    const all = h === undefined ? pending : pending.concat(h);
    pending = [];
    const headers: string[] = [];
    for (let i = 0; i < all.length; i += 2) headers.push(all[i].toLowerCase(), all[i + 1]);
    cur = { status, reason, headers, body: '' };
    out.heads++;
    const method = methods[answered];
    if (status >= 200 || status === 101) answered++;
    // As parserOnIncomingClient: no body for 1xx and for HEAD.
    return status < 200 || method === 'HEAD' ? 1 : 0;
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => { cur!.body += b.toString('latin1'); };
  p[HTTPParser.kOnMessageComplete] = () => { pending = []; out.messages.push(cur!); };
  p[HTTPParser.kOnExecute] = () => {};
  p.initialize(HTTPParser.RESPONSE, {}, 16 * 1024, 0);
  const r = p.execute(input);
  if (r instanceof Error) out.error = (r as Error & { code?: string }).code ?? r.message;
  else if (fin && r === input.length) {
    const f = p.finish();
    if (f instanceof Error) out.error = (f as Error & { code?: string }).code ?? f.message;
  }
  p.close();
  return out;
}

/** The response parser on `input` cut at `splits`, then FIN when `fin`. */
function runCodec(input: Buffer, methods: string[], fin: boolean, splits: number[] = []): Outcome {
  const parser = new ResponseParser();
  for (const m of methods) parser.expect(m === 'HEAD' ? AnswerTo.Head : AnswerTo.Plain);
  const out: Outcome = { messages: [], heads: 0, error: undefined };
  const cuts = [...new Set(splits.filter((s) => s > 0 && s < input.length))].sort((a, b) => a - b);
  cuts.push(input.length);
  let from = 0;
  let cur: Msg | undefined;
  const drain = (): boolean => {
    for (let ev = parser.next(); ev !== ParseEvent.NeedMore; ev = parser.next()) {
      if (ev === ParseEvent.Head) {
        const h = parser.head!;
        cur = { status: h.status, reason: h.reason, headers: h.headers, body: '' };
        out.heads++;
      } else if (ev === ParseEvent.Body) cur!.body += parser.body.toString('latin1');
      else if (ev === ParseEvent.End) out.messages.push(cur!);
      else return false;
    }
    return true;
  };
  try {
    for (const to of cuts) {
      parser.feed(Buffer.from(input.subarray(from, to)));
      from = to;
      if (!drain()) return out;
    }
    if (fin) {
      parser.eof();
      drain();
    }
  } catch (err) {
    if (!(err instanceof HttpParseError)) throw err;
    out.error = err.code;
  }
  return out;
}

const response = fc.record({
  method: fc.constantFrom<string>('GET', 'GET', 'HEAD'),
  status: fc.constantFrom<number>(200, 201, 204, 304, 404, 500, 599),
  reason: fc.constantFrom<string | null>('OK', '', 'Not Found', 'caf\xe9', null),
  minor: fc.constantFrom(0, 1),
  hint: fc.boolean(),
  headers: fc.array(fc.tuple(fc.constantFrom('Server', 'x-a', 'Set-Cookie', 'Cache-Control'), fc.stringMatching(/^[a-z0-9 =;,]{0,12}$/)), { maxLength: 3 }),
  body: fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x')),
  framing: fc.constantFrom<string>('length', 'chunked', 'close'),
  chunks: fc.integer({ min: 1, max: 3 }),
  trailer: fc.boolean(),
});
type Res = typeof response extends fc.Arbitrary<infer T> ? T : never;

/** Serialises a valid response; `last` allows a close-delimited body. */
function serialise(r: Res, last: boolean, extra: [string, string][] = [], statusLine?: string): string {
  const framing = r.framing === 'close' && !last ? 'length' : r.framing;
  const minor = framing === 'chunked' ? 1 : r.minor;
  let s = r.hint ? 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n' : '';
  s += `${statusLine ?? `HTTP/1.${minor} ${r.status}${r.reason === null ? '' : ` ${r.reason}`}`}\r\nServer: s\r\n`;
  if (minor === 0 && framing !== 'close') s += 'Connection: keep-alive\r\n';
  for (const [n, v] of r.headers) s += `${n}: ${v.trim()}\r\n`;
  for (const [n, v] of extra) s += `${n}:${v}\r\n`;
  const bodyless = r.method === 'HEAD' || r.status === 204 || r.status === 304;
  const body = bodyless ? '' : r.body;
  if (framing === 'length') return `${s}Content-Length: ${r.body.length}\r\n\r\n${body}`;
  if (framing === 'close') return `${s}\r\n${body}`;
  s += 'Transfer-Encoding: chunked\r\n\r\n';
  if (bodyless) return s;
  const step = Math.ceil(r.body.length / r.chunks) || 1;
  for (let i = 0; i < r.body.length; i += step) {
    const part = r.body.slice(i, i + step);
    s += `${part.length.toString(16)}\r\n${part}\r\n`;
  }
  return `${s}0\r\n${r.trailer ? 'X-Sum: 1\r\n' : ''}\r\n`;
}

const splits = fc.array(fc.nat(300), { maxLength: 4 });

const validInput = fc.tuple(fc.array(response, { minLength: 1, maxLength: 3 }), splits).map(([rs, cuts]) => ({
  input: Buffer.from(rs.map((r, i) => serialise(r, i === rs.length - 1)).join(''), 'latin1'),
  methods: rs.map((r) => r.method),
  splits: cuts,
}));

const STATUS_LINES = [
  'HTTP/1.2 200 OK', 'HTTP/2.0 200 OK', 'HTTP/0.9 200 OK', 'http/1.1 200 OK', 'HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK',
  'HTTP/1.1 099 OK', 'HTTP/1.1 000 OK', 'HTTP/1.1  200 OK', 'HTTP/1.1 200\tOK', 'HTTP/1.1 200 O\x00K', 'HTTP/1.1 200 \x7f',
  'HTTP/1.1 101 Switching Protocols', 'HTTP/1.1 1a0 OK', 'HTTP/1 200 OK', 'HTTP/1.1', 'HTTP/1.1 200 OK ', ' HTTP/1.1 200 OK',
];

const mutation = fc.oneof(
  ...framingMutations,
  fc.record({ kind: fc.constant('status' as const), line: fc.constantFrom(...STATUS_LINES) }),
  fc.record({ kind: fc.constant('header' as const), h: header }),
  fc.record({ kind: fc.constant('bytes' as const), edits: fc.array(fc.tuple(fc.nat(), fc.constantFrom('\r', '\n', '\0', ' ', '\t', ':', '\x7f', '\xff', ''), fc.boolean()), { minLength: 1, maxLength: 3 }) }),
  fc.record({ kind: fc.constant('random' as const), edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), fc.boolean()), { minLength: 1, maxLength: 3 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(r: Res, m: Mutation): string {
  const plain = { ...r, method: 'GET', status: 200 };
  switch (m.kind) {
    case 'clte': return serialise({ ...plain, framing: 'chunked' }, true, [['Content-Length', ' 3']]);
    case 'doublecl': {
      const v = m.oneField ? [['Content-Length', ` ${m.a}, ${m.b}`]] : [['Content-Length', ` ${m.a}`], ['Content-Length', ` ${m.b}`]];
      return serialise({ ...plain, framing: 'close', body: '' }, true, v as [string, string][]) + 'abc';
    }
    case 'te': return serialise({ ...plain, framing: 'close', minor: 1, body: '' }, true, [['Transfer-Encoding', m.te]]) + '3\r\nabc\r\n0\r\n\r\n';
    case 'fold': return serialise(r, true, [['X-Fold', ' a\r\n b']]);
    case 'spaceColon': return serialise(r, true).replace('Server:', 'Server :');
    case 'chunkSize': return serialise({ ...plain, framing: 'close', minor: 1, body: '' }, true, [['Transfer-Encoding', ' chunked']]) + `${m.size}\r\nx\r\n0\r\n\r\n`;
    case 'status': return serialise(r, true, [], m.line);
    case 'header': return serialise(r, true, [m.h]);
    case 'cut': {
      const s = serialise(r, true);
      return s.slice(0, m.at % (s.length + 1));
    }
    case 'bytes':
    case 'random': {
      let s = serialise(r, true);
      for (const [at, ch, replace] of m.edits) {
        const i = at % (s.length + 1);
        s = s.slice(0, i) + ch + s.slice(replace ? i + 1 : i);
      }
      return s;
    }
  }
}

const mutatedInput = fc.tuple(fc.option(response, { nil: undefined }), response, mutation, splits, fc.boolean())
  .map(([before, r, m, cuts, fin]) => ({
    input: Buffer.from((before ? serialise(before, false) : '') + mutate(r, m), 'latin1'),
    methods: before ? [before.method, r.method] : [r.method],
    splits: cuts,
    fin,
  }));

describe('response parser differential against llhttp', () => {
  it('refuses every generated response that llhttp refuses (framing forms, bad bytes, cuts, splits)', () => {
    let refused = 0;
    fc.assert(
      fc.property(mutatedInput, ({ input, methods, splits: cuts, fin }) => {
        const ll = runLlhttp(input, methods, fin);
        if (ll.error !== undefined) refused++;
        const codec = runCodec(input, methods, fin, cuts);
        expect(lenientOver(ll, codec), JSON.stringify(input.toString('latin1'))).toBeUndefined();
      }),
      { numRuns: 4000 },
    );
    // The generator must actually produce refusals, or the property proves nothing.
    expect(refused).toBeGreaterThan(800);
  });

  it('agrees with llhttp on status, reason, headers and bodies of valid pipelined responses', () => {
    fc.assert(
      fc.property(validInput, ({ input, methods, splits: cuts }) => {
        const ll = runLlhttp(input, methods, true);
        const codec = runCodec(input, methods, true, cuts);
        expect(ll.error).toBeUndefined();
        expect(codec.error).toBeUndefined();
        expect(codec.messages).toEqual(ll.messages);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses the framing forms that llhttp accepts from an upstream', () => {
    const forms = [
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\n\r\n',
    ];
    for (const f of forms) {
      const input = Buffer.from(f);
      expect(runLlhttp(input, ['GET'], false).error, f).toBeUndefined();
      expect(runCodec(input, ['GET'], false).error, f).toBe('bad_gateway');
    }
  });
});
