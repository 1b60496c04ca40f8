/**
 * A long fast-check run over the PROXY protocol codec (src/net/proxy-protocol.ts), the same
 * properties as test/net/proxy-protocol.test.ts with far more runs, plus how the inputs were
 * classified (to see the generators reach headers, not only errors):
 * - any bytes (random, after a v1/v2 start, or a mutated valid header), each accept mode:
 *   never throws; once a prefix is an error every longer one is; a header is need-more on
 *   every prefix shorter than its length and the same header on every longer one;
 * - encode → parse round trips, addresses as node:net formats them;
 * - v1 TCP6 accepts exactly the strings node:net's SocketAddress accepts.
 *   npm exec -- node bench/tools/proxy-protocol-fuzz.ts [--runs 100000] [--seed 1]
 */
import { SocketAddress, isIPv4 } from 'node:net';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import fc from 'fast-check';
import { encodeProxyHeader, parseProxyHeader } from '../../src/net/proxy-protocol.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '100000' }, seed: { type: 'string' } } });
const numRuns = Number(values.runs);
const seed = values.seed === undefined ? Date.now() : Number(values.seed);
const opts = { numRuns, seed };
type Accept = 'v1' | 'v2' | 'any';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const ascii = (s: string) => Buffer.from(s, 'latin1');
const normalize6 = (a: string) => new SocketAddress({ address: a, family: 'ipv6' }).address;
const tally = new Map<string, number>();
const count = (k: string) => tally.set(k, (tally.get(k) ?? 0) + 1);

const starts = [Buffer.alloc(0), ascii('PROXY '), ascii('PROXY TCP4 '), ascii('PROXY TCP6 '), ascii('PROXY UNKNOWN'), SIG, Buffer.concat([SIG, Buffer.from([0x21, 0x11, 0x00])]), Buffer.concat([SIG, Buffer.from([0x21, 0x21, 0x00, 0x24])])];
const addr = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`));
const port = fc.integer({ min: 0, max: 65535 });
/** A v2 TCP4 header with an SSL TLV (one sub-TLV) and a valid CRC32C TLV, checksum computed bit by bit. */
function withTlvs(): Buffer {
  const h = Buffer.from(`${SIG.toString('hex')}2111002501020304050607080001000220000f0000000000210007544c5376312e3303000400000000`, 'hex');
  let c = 0xffffffff;
  for (const x of h) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  h.writeUInt32BE((c ^ 0xffffffff) >>> 0, h.length - 4);
  return h;
}
const valid = fc.oneof(
  fc.tuple(fc.constantFrom(1 as const, 2 as const), addr, addr).map(([version, a, b]) => encodeProxyHeader({ version, source: { address: a, port: 1 }, destination: { address: b, port: 2 } })),
  fc.constant(withTlvs()),
);
const mutated = fc.tuple(valid, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 })).map(([v, edits]) => {
  const h = Buffer.concat([v, ascii('xyz')]);
  for (const [at, b] of edits) h[at % h.length] = b;
  return h;
});
const inputs = fc.oneof(
  fc.uint8Array({ maxLength: 140 }).map((b) => Buffer.from(b)),
  fc.tuple(fc.constantFrom(...starts), fc.uint8Array({ maxLength: 140 })).map(([s, b]) => Buffer.concat([s, b])),
  mutated,
);

function check(name: string, prop: fc.IRawProperty<unknown>): void {
  const t0 = performance.now();
  fc.assert(prop, opts);
  console.log(`${name}: ${numRuns} runs, ${Math.round(performance.now() - t0)} ms`);
}

check(
  'any bytes',
  fc.property(inputs, fc.constantFrom<Accept>('v1', 'v2', 'any'), (bytes, accept) => {
    const all = parseProxyHeader(bytes, accept);
    count(all.kind === 'error' ? `error ${all.code}` : all.kind === 'header' ? `header v${all.header.version} ${all.header.family}` : all.kind);
    let seenError = false;
    for (let k = 0; k <= bytes.length; k++) {
      const r = parseProxyHeader(bytes.subarray(0, k), accept);
      if (r.kind === 'error') seenError = true;
      else if (seenError) throw new Error(`prefix ${k}: ${r.kind} after an error`);
      if (all.kind === 'header') {
        if (k < all.length ? r.kind !== 'need-more' : !isDeepStrictEqual(r, all)) throw new Error(`prefix ${k}: ${JSON.stringify(r)}`);
      }
    }
    if (seenError && all.kind !== 'error') throw new Error('an error prefix, not an error in full');
  }),
);

check(
  'round trip',
  fc.property(fc.constantFrom(1 as const, 2 as const), addr, port, addr, port, (version, a, ap, b, bp) => {
    const n = (x: string) => normalize6(isIPv4(x) ? `::ffff:${x}` : x);
    const four = (x: string) => /^::ffff:\d+\.\d+\.\d+\.\d+$/.test(n(x));
    const v4 = four(a) && four(b);
    const shown = (x: string) => (v4 ? n(x).slice(7) : n(x));
    const bytes = encodeProxyHeader({ version, source: { address: a, port: ap }, destination: { address: b, port: bp } });
    const want = { kind: 'header', length: bytes.length, header: { version, command: 'proxy', family: v4 ? 'tcp4' : 'tcp6', source: { address: shown(a), port: ap }, destination: { address: shown(b), port: bp } } };
    const got = parseProxyHeader(Buffer.concat([bytes, ascii('payload')]), 'any');
    if (!isDeepStrictEqual(got, want)) throw new Error(`${JSON.stringify(got)} != ${JSON.stringify(want)}`);
  }),
);

let valid6 = 0;
const tok = fc.constantFrom('0', '1', 'a', 'F', 'ff', 'ffff', '01234', ':', ':', '::', '.', '1.2.3.4', '255', '0.0.0.0', '1.02.3.4');
const edit = fc.tuple(fc.nat(), fc.nat({ max: 2 }), fc.constantFrom(':', '.', '0', 'f', 'g', '%', '::'));
const nearly = fc.tuple(fc.ipV6(), fc.array(edit, { minLength: 1, maxLength: 2 })).map(([a, edits]) => {
  for (const [at, how, c] of edits) {
    const i = at % (a.length + 1);
    a = how === 0 ? a.slice(0, i) + c + a.slice(i) : how === 1 ? a.slice(0, i) + a.slice(i + 1) : a;
  }
  return a;
});
check(
  'v1 TCP6 text vs node:net',
  fc.property(fc.oneof(fc.array(tok, { minLength: 1, maxLength: 14 }).map((p) => p.join('')), nearly), (text) => {
    let want: string | undefined;
    try {
      want = text.includes('%') ? undefined : normalize6(text); // node:net drops a zone; the header has none
      if (want !== undefined) valid6++;
    } catch {
      want = undefined;
    }
    const line = `PROXY TCP6 ${text} ::1 1 2\r\n`;
    const r = parseProxyHeader(ascii(line), 'v1');
    const ok = line.length > 107 ? r.kind === 'error' : want === undefined ? r.kind === 'error' && r.code === 'malformed' : r.kind === 'header' && r.header.source?.address === want;
    if (!ok) throw new Error(`${JSON.stringify(text)}: ${JSON.stringify(r)}, node: ${want}`);
  }),
);

console.log(`seed ${seed}; valid IPv6 strings ${valid6}/${numRuns}; any-bytes results:`);
for (const [k, v] of [...tally].sort((x, y) => y[1] - x[1])) console.log(`  ${k.padEnd(24)} ${v}`);
