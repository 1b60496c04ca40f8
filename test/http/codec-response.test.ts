/**
 * The upstream response parser: status line, framing per RFC 9112 §6.3 (HEAD, 1xx, 101, 204,
 * 304, CONNECT, chunked with trailers, Content-Length, close-delimited until FIN), the
 * keep-alive decision, 502 on invalid responses, zero-copy bodies and every split point.
 */
import { describe, expect, it } from 'vitest';
import { AnswerTo, Framing, HttpParseError, ParseEvent, ResponseParser } from '../../src/http/codec/index.ts';

interface Parsed {
  status: number;
  reason: string;
  headers: string[];
  framing: number;
  keepAlive: boolean;
  body: string;
  trailers: string[] | undefined;
}

interface Run {
  messages: Parsed[];
  /** The last event other than NeedMore. */
  last: number;
  rest: string | undefined;
}

/** Feeds `pieces` in order (then FIN when `fin`), answering requests `answers` (default Plain). */
function run(pieces: string[], answers: number[] = [AnswerTo.Plain], fin = false): Run {
  const p = new ResponseParser();
  for (const a of answers) p.expect(a);
  const out: Run = { messages: [], last: ParseEvent.NeedMore, rest: undefined };
  let cur: Parsed | undefined;
  const drain = (): boolean => {
    for (let ev = p.next(); ev !== ParseEvent.NeedMore; ev = p.next()) {
      out.last = ev;
      if (ev === ParseEvent.Head) {
        const h = p.head!;
        cur = { status: h.status, reason: h.reason, headers: h.headers, framing: h.framing, keepAlive: h.keepAlive, body: '', trailers: undefined };
      } else if (ev === ParseEvent.Body) cur!.body += p.body.toString('latin1');
      else if (ev === ParseEvent.End) out.messages.push({ ...cur!, trailers: p.trailers });
      else {
        if (ev === ParseEvent.Paused) out.rest = p.takeRest().toString('latin1');
        return false;
      }
    }
    return true;
  };
  for (const piece of pieces) {
    p.feed(Buffer.from(piece, 'latin1'));
    if (!drain()) return out;
  }
  if (fin) {
    p.eof();
    drain();
  }
  return out;
}

function refusal(text: string, answers?: number[], fin = false): HttpParseError {
  try {
    run([text], answers, fin);
  } catch (err) {
    if (err instanceof HttpParseError) return err;
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(text)}`);
}

const OK = 'HTTP/1.1 200 OK\r\n';

describe('status line', () => {
  it('reads version, status and reason, the reason possibly empty or absent', () => {
    for (const [line, status, reason] of [
      ['HTTP/1.1 200 OK', 200, 'OK'],
      ['HTTP/1.1 404 Not  Found', 404, 'Not  Found'],
      ['HTTP/1.1 599 ', 599, ''],
      ['HTTP/1.1 204', 204, ''],
      ['HTTP/1.0 999 x\tyé', 999, 'x\tyé'],
    ] as const) {
      const m = run([`${line}\r\nContent-Length: 0\r\n\r\n`]).messages[0];
      expect([m.status, m.reason]).toEqual([status, reason]);
    }
  });

  it('refuses other versions, status codes outside 100-999 and malformed lines with 502', () => {
    for (const line of [
      'HTTP/1.2 200 OK', 'HTTP/2.0 200 OK', 'http/1.1 200 OK', 'HTTP/1.1  200 OK', 'HTTP/1.1 20 OK',
      'HTTP/1.1 2000 OK', 'HTTP/1.1 099 OK', 'HTTP/1.1 20a OK', 'HTTP/1.1 200\tOK', 'HTTP/1.1 200 O\0K', 'ICY 200 OK',
    ]) {
      const err = refusal(`${line}\r\nContent-Length: 0\r\n\r\n`);
      expect([err.status, err.code], line).toEqual([502, 'bad_gateway']);
    }
  });

  it('refuses the header rules of requests (obs-fold, space before colon, bare LF, NUL) with 502', () => {
    for (const fields of ['X: a\r\n b\r\n', 'X : a\r\n', 'X: a\nY: b\r\n', 'X: a\0b\r\n', 'X\r\n', '\r\n\r\n'.slice(1)]) {
      expect(refusal(`${OK}${fields}Content-Length: 0\r\n\r\n`).code).toBe('bad_gateway');
    }
    expect(refusal(`\r\n${OK}Content-Length: 0\r\n\r\n`).code).toBe('bad_gateway');
  });

  it('refuses a head over maxHeaderSize with 502', () => {
    const p = new ResponseParser({ maxHeaderSize: 64 });
    p.expect(AnswerTo.Plain);
    p.feed(Buffer.from(`${OK}X-Big: ${'a'.repeat(64)}\r\n`));
    expect(() => p.next()).toThrow(expect.objectContaining({ status: 502, message: 'response head too large' }));
    expect(() => p.next()).toThrow(HttpParseError); // and stays failed
  });

  it('refuses a response when no request is outstanding', () => {
    expect(refusal(`${OK}Content-Length: 0\r\n\r\n`, []).message).toBe('response without a request');
  });
});

describe('framing', () => {
  it('gives a response to HEAD no body whatever its fields say', () => {
    const r = run([`${OK}Content-Length: 5\r\n\r\n${OK}Transfer-Encoding: chunked\r\n\r\n${OK}\r\n`], [AnswerTo.Head, AnswerTo.Head, AnswerTo.Head]);
    expect(r.messages.map((m) => [m.framing, m.body, m.keepAlive])).toEqual([
      [Framing.None, '', true], [Framing.None, '', true], [Framing.None, '', true],
    ]);
  });

  it('parses 100 Continue and 103 Early Hints, then the real response of the same request', () => {
    const r = run(['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n', `${OK}Content-Length: 2\r\n\r\nhi`]);
    expect(r.messages.map((m) => [m.status, m.body])).toEqual([[100, ''], [103, ''], [200, 'hi']]);
    expect(r.messages[1].headers).toEqual(['link', '</a.css>']);
  });

  it('ends HTTP parsing at 101 Switching Protocols and hands the rest over as tunnel bytes', () => {
    const r = run(['HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi', 'more'], [AnswerTo.Upgrade]);
    expect(r.messages.map((m) => [m.status, m.framing, m.keepAlive])).toEqual([[101, Framing.Tunnel, false]]);
    expect(r.last).toBe(ParseEvent.Paused);
    expect(r.rest).toBe('\x81\x02hi');
    expect(refusal('HTTP/1.1 101 Switching Protocols\r\n\r\n').message).toBe('101 without an Upgrade request');
  });

  it('turns a 2xx to CONNECT into a tunnel and frames a refusal of CONNECT as usual', () => {
    const ok = run(['HTTP/1.1 200 Connection established\r\nContent-Length: 9\r\n\r\nSSH-2.0'], [AnswerTo.Connect]);
    expect([ok.messages[0].framing, ok.last, ok.rest]).toEqual([Framing.Tunnel, ParseEvent.Paused, 'SSH-2.0']);
    const no = run(['HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno'], [AnswerTo.Connect]);
    expect(no.messages.map((m) => [m.framing, m.body])).toEqual([[Framing.Length, 'no']]);
  });

  it('gives 204 and 304 no body even with a Content-Length', () => {
    const r = run([`HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n${OK}Content-Length: 1\r\n\r\nx`], [0, 0, 0]);
    expect(r.messages.map((m) => [m.status, m.body, m.keepAlive])).toEqual([[204, '', true], [304, '', true], [200, 'x', true]]);
  });

  it('decodes a chunked body with extensions and trailers', () => {
    const r = run([`${OK}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\nX-B: c\r\n\r\n`]);
    expect(r.messages).toMatchObject([{ framing: Framing.Chunked, body: 'abcde', trailers: ['x-sum', '5', 'x-b', 'c'], keepAlive: true }]);
  });

  it('reads a body without length until FIN, and the connection is not reused', () => {
    const open = run([`${OK}\r\nabc`, 'def']);
    expect(open.messages).toEqual([]);
    const r = run([`${OK}X: 1\r\n\r\nabc`, 'def'], undefined, true);
    expect(r.messages).toMatchObject([{ framing: Framing.Close, body: 'abcdef', keepAlive: false }]);
    expect(r.last).toBe(ParseEvent.Closed);
  });

  it('treats a final coding other than chunked as close-delimited', () => {
    const r = run([`${OK}Transfer-Encoding: gzip\r\n\r\n\x1f\x8b`], undefined, true);
    expect(r.messages).toMatchObject([{ framing: Framing.Close, body: '\x1f\x8b', keepAlive: false }]);
  });

  it('refuses ambiguous framing: CL with TE, two CL, a CL list, bad digits, bad TE lists', () => {
    for (const fields of [
      'Content-Length: 3\r\nTransfer-Encoding: chunked\r\n', 'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n',
      'Content-Length: 3\r\nContent-Length: 3\r\n', 'Content-Length: 1, 2\r\n', 'Content-Length: +3\r\n',
      'Content-Length: 0x3\r\n', 'Content-Length: 1234567890123456\r\n', 'Transfer-Encoding: chunked, chunked\r\n',
      'Transfer-Encoding: chunked, gzip\r\n', 'Transfer-Encoding: gzip, chunked\r\n', 'Transfer-Encoding: ,chunked\r\n',
      'Transfer-Encoding: chunked\t\r\n',
    ]) {
      expect(refusal(`${OK}${fields}\r\nabc`).code, fields).toBe('bad_gateway');
    }
    expect(refusal('HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n').code).toBe('bad_gateway');
  });

  it('refuses bad chunks and a response cut short by FIN', () => {
    expect(refusal(`${OK}Transfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n`).code).toBe('bad_gateway');
    expect(refusal(`${OK}Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n`).code).toBe('bad_gateway');
    for (const cut of [`${OK}Content-Length: 5\r\n\r\nab`, `${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nab`, 'HTTP/1.1 200 O']) {
      expect(refusal(cut, undefined, true).message).toBe('upstream closed mid-response');
    }
    // FIN between responses is no error: the connection just ends.
    expect(run([`${OK}Content-Length: 0\r\n\r\n`], [0, 0], true).last).toBe(ParseEvent.Closed);
  });
});

describe('keep-alive and pipelining', () => {
  it('decides reuse from version, Connection and framing', () => {
    const keep = (head: string, fin = false): boolean => run([`${head}\r\n`], undefined, fin).messages[0].keepAlive;
    expect(keep(`${OK}Content-Length: 0\r\n`)).toBe(true);
    expect(keep(`${OK}Connection: close\r\nContent-Length: 0\r\n`)).toBe(false);
    expect(keep(`${OK}Connection: keep-alive, Close\r\nContent-Length: 0\r\n`)).toBe(false);
    expect(keep('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n')).toBe(false);
    expect(keep('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n')).toBe(true);
    expect(keep('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n', true)).toBe(false); // close-delimited
  });

  it('parses pipelined responses in order and nothing after one that closes', () => {
    const r = run([`${OK}Content-Length: 1\r\n\r\na${OK}Transfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n${OK}Connection: close\r\nContent-Length: 1\r\n\r\nc${OK}`], [0, 0, 0, 0]);
    expect(r.messages.map((m) => m.body)).toEqual(['a', 'b', 'c']);
    expect(r.last).toBe(ParseEvent.Closed);
  });

  it('counts outstanding requests down as final responses end (1xx do not count)', () => {
    const p = new ResponseParser();
    p.expect(AnswerTo.Plain);
    p.expect(AnswerTo.Head);
    p.feed(Buffer.from(`HTTP/1.1 100 Continue\r\n\r\n${OK}Content-Length: 0\r\n\r\n`));
    const events: number[] = [];
    for (let ev = p.next(); ev !== ParseEvent.NeedMore; ev = p.next()) events.push(ev);
    expect(events).toEqual([ParseEvent.Head, ParseEvent.End, ParseEvent.Head, ParseEvent.End]);
    expect(p.outstanding).toBe(1);
    // A pipeline kept one request ahead for 200 responses: the HEAD answers stay in order.
    for (let i = 0; i < 200; i++) {
      p.expect(i % 2 === 0 ? AnswerTo.Plain : AnswerTo.Head);
      p.feed(Buffer.from(`${OK}Content-Length: 1\r\n\r\n${i % 2 === 1 ? 'x' : ''}`));
      for (let ev = p.next(); ev !== ParseEvent.NeedMore; ev = p.next()) {
        if (ev === ParseEvent.Head) expect(p.head!.framing).toBe(i % 2 === 1 ? Framing.Length : Framing.None);
      }
    }
    expect(p.outstanding).toBe(1);
  });

  it('hands out body views of the fed chunk, not copies', () => {
    const p = new ResponseParser();
    p.expect(AnswerTo.Plain);
    const chunk = Buffer.from(`${OK}Content-Length: 5\r\n\r\nhello`);
    p.feed(chunk);
    expect(p.next()).toBe(ParseEvent.Head);
    expect(p.next()).toBe(ParseEvent.Body);
    expect(p.body.buffer).toBe(chunk.buffer);
    expect(p.next()).toBe(ParseEvent.End);
  });

  it('gives the same result for every split of a stream into two and into single bytes', () => {
    const text = 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n' +
      `${OK}Transfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n` +
      'HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n' +
      `${OK}Content-Length: 4\r\n\r\nwxyz` +
      'HTTP/1.1 200 OK\r\nServer: s\r\n\r\nuntil the end';
    const answers = [0, 0, 0, 0];
    const whole = run([text], answers, true);
    expect(whole.messages.map((m) => [m.status, m.body])).toEqual([[103, ''], [200, 'abc'], [304, ''], [200, 'wxyz'], [200, 'until the end']]);
    for (let i = 1; i < text.length; i++) {
      expect(run([text.slice(0, i), text.slice(i)], answers, true), `split at ${i}`).toEqual(whole);
    }
    expect(run([...text], answers, true)).toEqual(whole);
  });
});
