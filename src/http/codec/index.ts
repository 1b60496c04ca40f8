/**
 * The strict HTTP/1.1 request codec of the HTTP listener: an incremental parser over Buffers
 * that refuses every ambiguous framing (request smuggling) with the contract's status and code.
 * `ResponseParser` reads upstream responses with the same rules (an invalid one is 502).
 *
 * @example
 * import { RequestParser, ParseEvent, HttpParseError } from './http/codec/index.ts';
 * const parser = new RequestParser({ maxHeaderSize: 16384, maxBodySize: 0 });
 * parser.feed(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
 * parser.next() === ParseEvent.Head; // parser.head.target === '/'
 */
export { HttpParseError, type HttpParseErrorCode } from './chars.ts';
export { Codings, codingsOf, contentLengthOf, listHas } from './fields.ts';
export type { RequestHead } from './head.ts';
export { ParseEvent, RequestParser, type ParserOptions } from './parser.ts';
export { AnswerTo, Framing, type ResponseHead } from './response-head.ts';
export { ResponseParser, type ResponseParserOptions } from './response.ts';
