/**
 * Bodies and message boundaries: content-length and chunked decoding (extensions, trailers,
 * strict CRLF, bad sizes), zero-copy slices, pipelining at every split point, upgrades and
 * the end of a connection that does not keep alive.
 */
import { describe, expect, it } from 'vitest';
import { HttpParseError, ParseEvent, RequestParser, type ParserOptions } from '../../src/http/codec/index.ts';

interface Parsed {
  method: string;
  target: string;
  body: string;
  trailers: string[] | undefined;
}

/** Feeds `pieces` one by one and collects complete messages, and the last non-NeedMore event. */
function run(pieces: string[], options?: ParserOptions): { messages: Parsed[]; last: number } {
  const p = new RequestParser(options);
  const messages: Parsed[] = [];
  let cur: Parsed | undefined;
  let last: number = ParseEvent.NeedMore;
  for (const piece of pieces) {
    p.feed(Buffer.from(piece, 'latin1'));
    for (let ev = p.next(); ev !== ParseEvent.NeedMore; ev = p.next()) {
      last = ev;
      if (ev === ParseEvent.Head) cur = { method: p.head!.method, target: p.head!.target, body: '', trailers: undefined };
      else if (ev === ParseEvent.Body) cur!.body += p.body.toString('latin1');
      else if (ev === ParseEvent.End) messages.push({ ...cur!, trailers: p.trailers });
      else break;
    }
  }
  return { messages, last };
}

function refusal(text: string, options?: ParserOptions): { status: number; code: string } {
  try {
    run([text], options);
  } catch (err) {
    if (err instanceof HttpParseError) return { status: err.status, code: err.code };
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(text)}`);
}

const POST = 'POST /u HTTP/1.1\r\nHost: a\r\n';
const CHUNKED = `${POST}Transfer-Encoding: chunked\r\n\r\n`;

describe('content-length bodies', () => {
  it('counts the bytes and hands out views of the fed chunk, not copies', () => {
    const p = new RequestParser();
    const chunk = Buffer.from(`${POST}Content-Length: 5\r\n\r\nhelloGET`, 'latin1');
    p.feed(chunk);
    expect(p.next()).toBe(ParseEvent.Head);
    expect(p.next()).toBe(ParseEvent.Body);
    expect(p.body.toString()).toBe('hello');
    expect(p.body.buffer).toBe(chunk.buffer);
    expect(p.next()).toBe(ParseEvent.End);
    expect(p.next()).toBe(ParseEvent.NeedMore); // 'GET' waits for the rest of its head
  });

  it('a body split over many chunks arrives whole', () => {
    const { messages } = run([`${POST}Content-Length: 10\r\n\r\n01`, '234', '56789']);
    expect(messages.map((m) => m.body)).toEqual(['0123456789']);
  });
});

describe('chunked bodies', () => {
  it('decodes chunks, extensions and trailers', () => {
    const text = `${CHUNKED}3;name=v;q="a \\" b"\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 13\r\nX-B: b\r\n\r\n`;
    const { messages } = run([text]);
    expect(messages).toEqual([{ method: 'POST', target: '/u', body: 'abc0123456789', trailers: ['x-sum', '13', 'x-b', 'b'] }]);
  });

  it('an empty chunked body ends at the last chunk', () => {
    expect(run([`${CHUNKED}0\r\n\r\n`]).messages[0].body).toBe('');
  });

  const bad: [string, string, number][] = [
    ['0x prefix', '0x10\r\n', 400],
    ['negative size', '-1\r\n', 400],
    ['empty size', '\r\n', 400],
    ['space after the size', '1 \r\nx\r\n0\r\n\r\n', 400],
    ['overlong size', `${'f'.repeat(14)}\r\n`, 400],
    ['bare LF after the size', '1\nx\r\n0\r\n\r\n', 400],
    ['data not followed by CRLF', '1\r\nxy\r\n0\r\n\r\n', 400],
    ['LF only after data', '1\r\nx\n0\r\n\r\n', 400],
    ['empty extension name', '1;=a\r\nx\r\n0\r\n\r\n', 400],
    ['unterminated quoted extension', '1;a="b\r\nx\r\n0\r\n\r\n', 400],
    ['extension line too long', `1;a=${'b'.repeat(5000)}\r\n`, 400],
    ['bare LF in a trailer', '0\r\nX-A: a\nX-B: b\r\n\r\n', 400],
    ['obs-fold in a trailer', '0\r\nX-A: a\r\n b\r\n\r\n', 400],
  ];
  it.each(bad)('refuses %s', (_name, body, status) => {
    expect(refusal(CHUNKED + body).status).toBe(status);
  });

  it('413 once the decoded body passes maxBodySize', () => {
    expect(refusal(`${CHUNKED}8\r\n01234567\r\n8\r\n01234567\r\n`, { maxBodySize: 10 })).toEqual({ status: 413, code: 'body_too_large' });
  });

  it('431 when the trailers pass maxHeaderSize', () => {
    const trailer = `X-Big: ${'t'.repeat(400)}\r\n\r\n`;
    expect(refusal(`${CHUNKED}0\r\n${trailer}`, { maxHeaderSize: 300 })).toEqual({ status: 431, code: 'headers_too_large' });
  });
});

describe('pipelining', () => {
  const three =
    `GET /1 HTTP/1.1\r\nHost: a\r\n\r\n` +
    `${CHUNKED.replace('/u', '/2')}2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n` +
    `PUT /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody`;
  const expected: Parsed[] = [
    { method: 'GET', target: '/1', body: '', trailers: undefined },
    { method: 'POST', target: '/2', body: 'hi', trailers: ['x-t', '1'] },
    { method: 'PUT', target: '/3', body: 'body', trailers: undefined },
  ];

  it('parses three requests from one buffer in order', () => {
    expect(run([three]).messages).toEqual(expected);
  });

  it('gives the same result split at every byte boundary, and one byte at a time', () => {
    for (let i = 1; i < three.length; i++) {
      expect(run([three.slice(0, i), three.slice(i)]).messages).toEqual(expected);
    }
    expect(run([...three]).messages).toEqual(expected);
  });

  it('stops after a request that does not keep the connection alive', () => {
    const { messages, last } = run([`GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n`]);
    expect(messages.map((m) => m.target)).toEqual(['/a']);
    expect(last).toBe(ParseEvent.Closed);
  });

  it('HTTP/1.0 with keep-alive pipelines', () => {
    const ka = 'GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n';
    expect(run([ka + ka.replace('/a', '/b')]).messages.map((m) => m.target)).toEqual(['/a', '/b']);
  });
});

describe('upgrade and 100-continue', () => {
  it('pauses after an upgrade request and hands over the following bytes', () => {
    const p = new RequestParser();
    p.feed(Buffer.from('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello', 'latin1'));
    expect(p.next()).toBe(ParseEvent.Head);
    expect(p.next()).toBe(ParseEvent.End);
    expect(p.next()).toBe(ParseEvent.Paused);
    expect(p.takeRest().toString('latin1')).toBe('\x81\x05hello');
  });

  it('resumes HTTP parsing when the upgrade is refused', () => {
    const p = new RequestParser();
    p.feed(Buffer.from('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n'));
    expect([p.next(), p.next(), p.next()]).toEqual([ParseEvent.Head, ParseEvent.End, ParseEvent.Paused]);
    p.resume();
    expect(p.next()).toBe(ParseEvent.Head);
    expect(p.head!.target).toBe('/n');
  });

  it('Expect: 100-continue: the head comes before any body byte, the body follows', () => {
    const p = new RequestParser();
    p.feed(Buffer.from(`${POST}Expect: 100-continue\r\nContent-Length: 3\r\n\r\n`));
    expect(p.next()).toBe(ParseEvent.Head);
    expect(p.head!.expectContinue).toBe(true);
    expect(p.next()).toBe(ParseEvent.NeedMore);
    p.feed(Buffer.from('abc'));
    expect(p.next()).toBe(ParseEvent.Body);
    expect(p.body.toString()).toBe('abc');
    expect(p.next()).toBe(ParseEvent.End);
  });
});
