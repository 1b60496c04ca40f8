/**
 * The request head rules of the codec: each refusal with its status and code, the target
 * forms, the limits (414/431) and the derived flags (keep-alive, upgrade, 100-continue).
 */
import { describe, expect, it } from 'vitest';
import { HttpParseError, ParseEvent, RequestParser, type ParserOptions, type RequestHead } from '../../src/http/codec/index.ts';

function head(text: string, options?: ParserOptions): RequestHead {
  const p = new RequestParser(options);
  p.feed(Buffer.from(text, 'latin1'));
  expect(p.next()).toBe(ParseEvent.Head);
  return p.head!;
}

function refusal(text: string, options?: ParserOptions): { status: number; code: string } {
  const p = new RequestParser(options);
  p.feed(Buffer.from(text, 'latin1'));
  try {
    while (p.next() !== ParseEvent.NeedMore);
  } catch (err) {
    if (err instanceof HttpParseError) return { status: err.status, code: err.code };
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(text)}`);
}

const H = 'Host: a.test\r\n';

describe('request head', () => {
  it('parses method, target, version and lowercase headers in order', () => {
    const h = head(`POST /p?q=1 HTTP/1.1\r\n${H}X-Tr:  spaced value \t\r\nContent-Length: 0\r\n\r\n`);
    expect(h.method).toBe('POST');
    expect(h.target).toBe('/p?q=1');
    expect(h.versionMinor).toBe(1);
    expect(h.headers).toEqual(['host', 'a.test', 'x-tr', 'spaced value', 'content-length', '0']);
    expect(h.host).toBe('a.test');
    expect(h.contentLength).toBe(0);
  });

  it('accepts the four request-target forms where they belong', () => {
    expect(head(`OPTIONS * HTTP/1.1\r\n${H}\r\n`).target).toBe('*');
    expect(head(`CONNECT a.test:443 HTTP/1.1\r\n${H}\r\n`).target).toBe('a.test:443');
    expect(head(`GET http://a.test/x HTTP/1.1\r\n${H}\r\n`).target).toBe('http://a.test/x');
  });

  const bad: [string, string, number, string][] = [
    ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, 400, 'bad_request'],
    ['space before colon', `GET / HTTP/1.1\r\nHost : a\r\n\r\n`, 400, 'bad_request'],
    ['bare LF in a header', `GET / HTTP/1.1\r\n${H}X-A: a\nX-B: b\r\n\r\n`, 400, 'bad_request'],
    ['bare LF ending the request line', `GET / HTTP/1.1\n${H}\r\n`, 400, 'bad_request'],
    ['bare CR in a value', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, 400, 'bad_request'],
    ['NUL in a value', `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, 400, 'bad_request'],
    ['CTL in a value', `GET / HTTP/1.1\r\n${H}X-A: a\x01\r\n\r\n`, 400, 'bad_request'],
    ['non-token header name', `GET / HTTP/1.1\r\n${H}X(A): a\r\n\r\n`, 400, 'bad_request'],
    ['empty header name', `GET / HTTP/1.1\r\n${H}: a\r\n\r\n`, 400, 'bad_request'],
    ['double space in the request line', `GET  / HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['space in the target', `GET /a b HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['leading empty line', `\r\nGET / HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['lowercase version', `GET / http/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['malformed version', `GET / HTTP/1.10\r\n${H}\r\n`, 400, 'bad_request'],
    ['HTTP/2.0', `GET / HTTP/2.0\r\n${H}\r\n`, 505, 'http_version_not_supported'],
    ['HTTP/1.2', `GET / HTTP/1.2\r\n${H}\r\n`, 505, 'http_version_not_supported'],
    ['unknown method', `BREW / HTTP/1.1\r\n${H}\r\n`, 501, 'not_implemented'],
    ['asterisk-form with GET', `GET * HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['CONNECT with a path', `CONNECT / HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['authority-form with GET', `GET a.test:80 HTTP/1.1\r\n${H}\r\n`, 400, 'bad_request'],
    ['missing Host in HTTP/1.1', `GET / HTTP/1.1\r\n\r\n`, 400, 'bad_request'],
    ['duplicate Host', `GET / HTTP/1.1\r\n${H}${H}\r\n`, 400, 'bad_request'],
    ['invalid Host', `GET / HTTP/1.1\r\nHost: a/b\r\n\r\n`, 400, 'bad_request'],
    ['CL with TE', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n`, 400, 'bad_request'],
    ['two different CL', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\n`, 400, 'bad_request'],
    ['two identical CL (llhttp refuses them too)', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\n`, 400, 'bad_request'],
    ['a CL list', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 2\r\n\r\n`, 400, 'bad_request'],
    ['a signed CL', `POST / HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\n`, 400, 'bad_request'],
    ['TE not ending in chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n`, 400, 'bad_request'],
    ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n`, 400, 'bad_request'],
    ['chunked twice', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`, 400, 'bad_request'],
    ['TE with a trailing HTAB', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\t\r\n\r\n`, 400, 'bad_request'],
    ['unknown transfer coding', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n`, 501, 'not_implemented'],
    ['TE in HTTP/1.0', `POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n`, 400, 'bad_request'],
  ];
  it.each(bad)('refuses %s', (_name, text, status, code) => {
    expect(refusal(text)).toEqual({ status, code });
  });

  it('accepts TE with optional whitespace and any case', () => {
    expect(head(`POST / HTTP/1.1\r\n${H}Transfer-Encoding:  CHUNKED \r\n\r\n`).chunked).toBe(true);
  });
});

describe('limits', () => {
  it('414 when the request line exceeds maxRequestLine, complete or not', () => {
    const long = `GET /${'a'.repeat(200)} HTTP/1.1\r\n${H}\r\n`;
    expect(refusal(long, { maxRequestLine: 100 })).toEqual({ status: 414, code: 'uri_too_long' });
    expect(refusal(`GET /${'a'.repeat(200)}`, { maxRequestLine: 100 })).toEqual({ status: 414, code: 'uri_too_long' });
    expect(head(long, { maxRequestLine: 300 }).target.length).toBe(201);
  });

  it('the request line limit is capped at maxHeaderSize', () => {
    expect(refusal(`GET /${'a'.repeat(200)}`, { maxHeaderSize: 100 })).toEqual({ status: 414, code: 'uri_too_long' });
  });

  it('431 when the whole head exceeds maxHeaderSize, complete or not', () => {
    const big = `GET / HTTP/1.1\r\n${H}X-Big: ${'b'.repeat(300)}\r\n\r\n`;
    expect(refusal(big, { maxHeaderSize: 256 })).toEqual({ status: 431, code: 'headers_too_large' });
    expect(refusal(big.slice(0, 300), { maxHeaderSize: 256 })).toEqual({ status: 431, code: 'headers_too_large' });
    expect(head(big, { maxHeaderSize: 400 }).headers[3].length).toBe(300);
  });

  it('413 when Content-Length exceeds maxBodySize', () => {
    expect(refusal(`POST / HTTP/1.1\r\n${H}Content-Length: 11\r\n\r\n`, { maxBodySize: 10 })).toEqual({ status: 413, code: 'body_too_large' });
  });

  it('keeps refusing after an error', () => {
    const p = new RequestParser();
    p.feed(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    expect(() => p.next()).toThrow(HttpParseError);
    expect(() => p.next()).toThrow(/missing Host/);
  });
});

describe('connection flags', () => {
  it('HTTP/1.1 keeps alive unless Connection: close', () => {
    expect(head(`GET / HTTP/1.1\r\n${H}\r\n`).keepAlive).toBe(true);
    expect(head(`GET / HTTP/1.1\r\n${H}Connection: Keep-Alive, CLOSE\r\n\r\n`).keepAlive).toBe(false);
  });

  it('HTTP/1.0 keeps alive only with Connection: keep-alive', () => {
    expect(head(`GET / HTTP/1.0\r\n\r\n`).keepAlive).toBe(false);
    expect(head(`GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`).keepAlive).toBe(true);
    expect(head(`GET / HTTP/1.0\r\nConnection: x\r\nConnection: Keep-Alive\r\n\r\n`).keepAlive).toBe(true);
    expect(head(`GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n`).keepAlive).toBe(false);
    expect(head(`GET / HTTP/1.0\r\n\r\n`).host).toBeUndefined();
  });

  it('upgrade needs both Upgrade and Connection: upgrade; CONNECT always', () => {
    expect(head(`GET / HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n`).upgrade).toBe(true);
    expect(head(`GET / HTTP/1.1\r\n${H}Upgrade: websocket\r\n\r\n`).upgrade).toBe(false);
    expect(head(`GET / HTTP/1.1\r\n${H}Connection: upgrade\r\n\r\n`).upgrade).toBe(false);
    expect(head(`CONNECT a.test:443 HTTP/1.1\r\n${H}\r\n`).upgrade).toBe(true);
  });

  it('Expect: 100-continue only from HTTP/1.1 clients', () => {
    expect(head(`POST / HTTP/1.1\r\n${H}Expect: 100-Continue\r\nContent-Length: 5\r\n\r\n`).expectContinue).toBe(true);
    expect(head(`POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`).expectContinue).toBe(false);
    expect(head(`POST / HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\n`).expectContinue).toBe(false);
  });
});
