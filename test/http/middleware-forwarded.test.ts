import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  Exchange, clientAddress, compileCidrs, compileForwarded, compileHeaderRules, forwardedForValue, isIpAddress,
  joinedForwardedFor, prepareUpstream, unmapAddress,
} from '../../src/http/middleware/index.ts';

const NO_RULES = compileHeaderRules(undefined);

/** The upstream headers as a multimap, for assertions. */
function upstream(peer: string, headers: string[], cfg: Parameters<typeof compileForwarded>[0], tls = false) {
  const ex = new Exchange(peer, tls, 8443, compileForwarded(cfg));
  ex.requestId = 'rid';
  const out: string[] = [];
  prepareUpstream(headers, 'api.example.com', ex, NO_RULES, 0, out);
  const get = (n: string) => out.flatMap((v, i) => (i % 2 === 0 && v === n ? [out[i + 1]] : []));
  return { ex, out, get };
}

describe('addresses and CIDRs', () => {
  test.each([
    ['10.0.0.0/8', '10.255.1.2', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['10.0.0.0/8', '::ffff:10.1.2.3', true],
    ['::ffff:10.0.0.0/104', '10.9.9.9', true],
    ['192.168.1.7', '192.168.1.7', true],
    ['192.168.1.7', '192.168.1.8', false],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['fd00::/8', 'fd12:3456::1', true],
    ['fd00::/8', 'fe80::1', false],
    ['2001:db8::/32', '2001:DB8:0:0:0:0:0:1', true],
    ['2001:db8::/32', '2001:db9::1', false],
    ['::1', '::1', true],
    ['::1', '::2', false],
    ['fe80::/10', 'fe80::1%eth0', true],
    ['::/0', '10.0.0.1', true],
    ['10.0.0.0/8', 'not-an-ip', false],
    ['10.0.0.0/8', '', false],
  ])('%s contains %s: %s', (cidr, addr, expected) => {
    expect(compileCidrs([cidr]).matches(addr)).toBe(expected);
  });

  test.each(['10.0.0.0/33', 'fd00::/129', '10.0.0/8', '1.2.3.4/', 'x', '01.2.3.4', '1:2:3:4:5:6:7:8:9', ':::1', '1::2::3', '10.0.0.0/8x'])(
    'invalid CIDR %s is refused', (cidr) => {
      expect(() => compileCidrs([cidr])).toThrow(/invalid CIDR/);
    },
  );

  test.each([
    ['::', true], ['::ffff:1.2.3.4', true], ['1:2:3:4:5:6:1.2.3.4', true], ['1::', true], ['1:', false],
    ['256.1.1.1', false], ['1.2.3', false], ['1.2.3.4.5', false], ['12345::', false], ['[::1]', false], ['1.2.3.4:80', false],
  ])('isIpAddress(%s) is %s', (a, ok) => expect(isIpAddress(a)).toBe(ok));

  test('IPv4 matching agrees with integer arithmetic', () => {
    fc.assert(fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (net, addr, bits) => {
      const n = (s: string) => s.split('.').reduce((a, p) => a * 256 + Number(p), 0);
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      const expected = ((n(net) & mask) >>> 0) === ((n(addr) & mask) >>> 0);
      expect(compileCidrs([`${net}/${bits}`]).matches(addr)).toBe(expected);
      expect(compileCidrs([`${net}/${bits}`]).matches(`::ffff:${addr}`)).toBe(expected);
    }));
  });

  test('every IPv6 address fast-check makes parses and matches itself', () => {
    fc.assert(fc.property(fc.ipV6(), (a) => {
      expect(isIpAddress(a)).toBe(true);
      expect(compileCidrs([a]).matches(a)).toBe(true);
    }));
  });

  test('unmapAddress turns IPv4-mapped IPv6 into IPv4 only', () => {
    expect(unmapAddress('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(unmapAddress('::1')).toBe('::1');
    expect(unmapAddress('10.0.0.1')).toBe('10.0.0.1');
  });
});

describe('client address', () => {
  const fw = compileForwarded({ trustedProxies: ['10.0.0.0/8', 'fd00::/8'] });
  test.each([
    ['untrusted peer ignores a spoofed XFF', '198.51.100.1', '1.2.3.4', '198.51.100.1'],
    ['trusted peer without XFF is the client', '10.0.0.1', '', '10.0.0.1'],
    ['trusted peer: right-most untrusted entry', '10.0.0.1', '1.1.1.1, 203.0.113.7, 10.0.0.9', '203.0.113.7'],
    ['trusted peer: spoofed left entries are skipped', '10.0.0.1', '6.6.6.6,203.0.113.7', '203.0.113.7'],
    ['trusted IPv6 peer', 'fd00::1', '2001:db8::5, fd00::2', '2001:db8::5'],
    ['IPv4-mapped peer is trusted and unmapped', '::ffff:10.0.0.1', '203.0.113.7', '203.0.113.7'],
    ['IPv4-mapped entry is unmapped', '10.0.0.1', '::ffff:203.0.113.7', '203.0.113.7'],
    ['all entries trusted: the left-most', '10.0.0.1', '10.0.0.3, 10.0.0.2', '10.0.0.3'],
    ['a non-address entry ends the walk', '10.0.0.1', '1.1.1.1, unknown , 10.0.0.2', 'unknown'],
    ['empty entries are skipped', '10.0.0.1', ' , 203.0.113.7 ,, ', '203.0.113.7'],
    ['untrusted mapped peer is unmapped', '::ffff:198.51.100.1', '', '198.51.100.1'],
  ])('%s', (_, peer, xff, expected) => {
    expect(clientAddress(peer, xff, fw)).toBe(expected);
  });

  test('several X-Forwarded-For fields are joined in order', () => {
    const headers = ['x-forwarded-for', '1.1.1.1', 'host', 'a', 'x-forwarded-for', '2.2.2.2, 3.3.3.3'];
    expect(joinedForwardedFor(headers)).toBe('1.1.1.1, 2.2.2.2, 3.3.3.3');
    const { ex, get } = upstream('10.0.0.1', headers, { trustedProxies: ['10.0.0.0/8'] });
    expect(ex.clientAddress).toBe('3.3.3.3');
    expect(get('x-forwarded-for')).toEqual(['1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1']);
  });
});

describe('forwarded headers sent upstream', () => {
  const spoof = ['host', 'api.example.com', 'x-forwarded-for', '6.6.6.6', 'x-forwarded-proto', 'https',
    'x-forwarded-host', 'evil.example', 'x-forwarded-port', '1'];
  test.each([
    ['append, untrusted', '198.51.100.1', 'append', ['6.6.6.6, 198.51.100.1'], 'http', 'api.example.com', '8443', '198.51.100.1'],
    ['replace, untrusted', '198.51.100.1', 'replace', ['198.51.100.1'], 'http', 'api.example.com', '8443', '198.51.100.1'],
    ['append, trusted keeps its proto/host/port', '10.0.0.1', 'append', ['6.6.6.6, 10.0.0.1'], 'https', 'evil.example', '1', '6.6.6.6'],
    ['replace, trusted', '10.0.0.1', 'replace', ['10.0.0.1'], 'https', 'evil.example', '1', '6.6.6.6'],
    ['IPv6 untrusted', '2001:db8::1', 'append', ['6.6.6.6, 2001:db8::1'], 'http', 'api.example.com', '8443', '2001:db8::1'],
  ] as const)('%s', (_, peer, mode, xff, proto, host, port, client) => {
    const { ex, get } = upstream(peer, [...spoof], { trustedProxies: ['10.0.0.0/8'], xForwardedFor: mode });
    expect(get('x-forwarded-for')).toEqual(xff);
    expect(get('x-forwarded-proto')).toEqual([proto]);
    expect(get('x-forwarded-host')).toEqual([host]);
    expect(get('x-forwarded-port')).toEqual([port]);
    expect(ex.clientAddress).toBe(client);
  });

  test('the gateway sets proto, host and port when none came; https over TLS', () => {
    const { get } = upstream('198.51.100.1', ['host', 'api.example.com'], {}, true);
    expect(get('x-forwarded-for')).toEqual(['198.51.100.1']);
    expect(get('x-forwarded-proto')).toEqual(['https']);
    expect(get('x-forwarded-host')).toEqual(['api.example.com']);
    expect(get('x-forwarded-port')).toEqual(['8443']);
  });

  test('forwardedForValue appends to or replaces the incoming value', () => {
    expect(forwardedForValue('1.1.1.1', '::ffff:10.0.0.2', compileForwarded({}))).toBe('1.1.1.1, 10.0.0.2');
    expect(forwardedForValue('1.1.1.1', '10.0.0.2', compileForwarded({ xForwardedFor: 'replace' }))).toBe('10.0.0.2');
    expect(forwardedForValue('', '10.0.0.2', compileForwarded({}))).toBe('10.0.0.2');
  });
});
