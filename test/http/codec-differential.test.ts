/**
 * The codec is never more lenient than llhttp (Node's own parser): the same generated inputs
 * go to both, and any input llhttp refuses must be refused by the codec. Valid requests must
 * parse the same in both. scripts/http-differential.ts runs the same properties a million times.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lenientOver, mutatedInput, runCodec, runLlhttp, validInput } from './codec-differential.ts';

describe('differential against llhttp', () => {
  it('refuses every mutated input that llhttp refuses (smuggling forms, bad bytes, splits)', () => {
    let refused = 0;
    fc.assert(
      fc.property(mutatedInput, ({ input, splits }) => {
        const ll = runLlhttp(input);
        if (ll.error !== undefined) refused++;
        expect(lenientOver(ll, runCodec(input, splits)), JSON.stringify(input.toString('latin1'))).toBeUndefined();
      }),
      { numRuns: 5000 },
    );
    // The generator must actually produce refusals, or the property proves nothing.
    expect(refused).toBeGreaterThan(1000);
  });

  it('agrees with llhttp on method, target, headers and body of valid pipelined requests', () => {
    fc.assert(
      fc.property(validInput, ({ input, splits }) => {
        const ll = runLlhttp(input);
        const codec = runCodec(input, splits);
        expect(ll.error).toBeUndefined();
        expect(codec.error).toBeUndefined();
        expect(codec.messages).toEqual(ll.messages);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses the named smuggling forms that llhttp accepts too', () => {
    // llhttp takes these; the gateway must not (ambiguity with other servers, or no Host).
    const forms = [
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
      'GET / HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    ];
    for (const f of forms) {
      const input = Buffer.from(f);
      expect(runLlhttp(input).error).toBeUndefined();
      expect(runCodec(input).error).toBeDefined();
    }
  });
});
