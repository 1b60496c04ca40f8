import { describe, expect, test } from 'vitest';
import { parseDuration, parseHostPort, parseListen, parseSize, UnitError } from '../../src/config/units.ts';

describe('parseDuration', () => {
  test.each([
    ['500ms', 500], ['5s', 5_000], ['5m', 300_000], ['1h', 3_600_000], ['1d', 86_400_000],
    ['1m30s', 90_000], ['1.5s', 1_500], ['250', 250], [250, 250], [0, 0], [' 2s ', 2_000],
  ] as const)('%j is %d ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  test.each(['5 sec', '-1s', '1x', '', 's', '5s5', '1.s'])('rejects %j', (input) => {
    expect(() => parseDuration(input)).toThrow(UnitError);
  });

  test('names the accepted forms in the message', () => {
    expect(() => parseDuration('5 sec')).toThrow('invalid duration "5 sec": use a number with ms, s, m, h or d (500ms, 5s, 1m30s), or a plain number of milliseconds');
  });

  test('rejects negative numbers and durations a timer cannot wait', () => {
    expect(() => parseDuration(-1)).toThrow('invalid duration -1: must be a number >= 0');
    expect(() => parseDuration('25d')).toThrow('is too long');
  });
});

describe('parseSize', () => {
  test.each([
    ['64KiB', 65_536], ['1MiB', 1_048_576], ['1GiB', 1_073_741_824], ['10KB', 10_000], ['2MB', 2_000_000],
    ['1kib', 1_024], ['100B', 100], ['100', 100], [512, 512], ['1.5KiB', 1_536],
  ] as const)('%j is %d bytes', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  test.each(['64 KiB', '64K', '1TB', 'KiB', '-1', '1.5B'])('rejects %j', (input) => {
    expect(() => parseSize(input)).toThrow(UnitError);
  });

  test('rejects fractions of a byte with a precise message', () => {
    expect(() => parseSize(1.5)).toThrow('size 1.5 is not a whole number of bytes');
  });
});

describe('parseListen', () => {
  test('host:port', () => {
    expect(parseListen('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080, address: '127.0.0.1:8080' });
    expect(parseListen('localhost:0')).toEqual({ host: 'localhost', port: 0, address: 'localhost:0' });
  });

  test('bracketed IPv6', () => {
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80, address: '[::1]:80' });
    expect(parseListen('[::]:443')).toEqual({ host: '::', port: 443, address: '[::]:443' });
  });

  test('a bare port listens on every IPv4 interface', () => {
    expect(parseListen(9000)).toEqual({ host: '0.0.0.0', port: 9000, address: '9000' });
    expect(parseListen('9000')).toEqual({ host: '0.0.0.0', port: 9000, address: '9000' });
    expect(parseListen(':9000')).toEqual({ host: '0.0.0.0', port: 9000, address: ':9000' });
  });

  test.each([
    ['localhost', 'invalid listen address "localhost": use host:port, [ipv6]:port or a bare port'],
    ['::1:80', 'invalid listen address "::1:80": put IPv6 hosts in brackets, like [::1]:8080'],
    ['host:http', 'invalid port in "host:http": expected a number from 0 to 65535'],
    ['host:70000', 'port 70000 in "host:70000" is out of range (0-65535)'],
    [70000, 'port 70000 in "70000" is out of range (0-65535)'],
    ['http://x:80', 'invalid listen address "http://x:80": use host:port, [ipv6]:port or a bare port'],
  ] as const)('rejects %j', (input, message) => {
    expect(() => parseListen(input)).toThrow(message);
  });
});

describe('parseHostPort', () => {
  test('needs a host', () => {
    expect(parseHostPort('10.0.0.7:9001')).toEqual({ host: '10.0.0.7', port: 9001, address: '10.0.0.7:9001' });
    expect(() => parseHostPort(':9001')).toThrow('address ":9001" has no host: use host:port');
  });
});
