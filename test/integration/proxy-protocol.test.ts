import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, tempDir } from '../helpers/daemon.ts';
import { encodeProxyHeader, parseProxyHeader, type ProxyHeader } from '../../src/net/proxy-protocol.ts';
import { testCerts, type TestCert, type TestCerts } from '../helpers/tls-certs.ts';
import { SECRET } from '../hub/harness.ts';

/**
 * Listener `proxyProtocol`, end to end: the daemon from its CLI with two shards; clients on
 * 127.0.0.1 play the load balancer (a listener that trusts 127.0.0.1) or an ordinary client (a
 * listener that trusts only 10.0.0.0/8).
 */

const V1 = (src: string, port = 51000) => `PROXY TCP4 ${src} 10.0.0.1 ${port} 80\r\n`;

/** Writes `bytes` on a fresh connection, then returns everything the gateway sent until it closed. */
async function exchange(port: number, bytes: (string | Buffer)[]): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  let got = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (got += d));
  s.write(Buffer.concat(bytes.map((b) => (typeof b === 'string' ? Buffer.from(b, 'latin1') : b))));
  await once(s, 'close');
  return got;
}

describe('PROXY protocol on listeners (workers: 2)', () => {
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let certs: TestCerts;
  let ca: TestCert;
  let backend: http.Server;
  let sink: net.Server;
  const seen: http.IncomingHttpHeaders[] = [];
  const sinkConns: net.Socket[] = [];
  let ppSink: net.Server;
  /** What the backend behind `sendProxyProtocol` saw: each connection's header and the bytes after it. */
  const ppSeen: { header: ProxyHeader | undefined; rest: string }[] = [];

  beforeAll(async () => {
    certs = testCerts();
    ca = await certs.ca('ca');
    const leaf = await certs.leaf('web', { ca, cn: 'web.example.test', dns: ['web.example.test'] });
    backend = http.createServer((req, res) => {
      seen.push(req.headers);
      res.end('ok');
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    sink = net.createServer((s) => {
      sinkConns.push(s);
      s.on('close', () => sinkConns.splice(sinkConns.indexOf(s), 1));
      s.resume();
    });
    sink.listen(0, '127.0.0.1');
    await once(sink, 'listening');
    ppSink = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      const entry: { header: ProxyHeader | undefined; rest: string } = { header: undefined, rest: '' };
      ppSeen.push(entry);
      s.on('data', (d: Buffer) => {
        if (entry.header !== undefined) {
          entry.rest += d.toString('latin1');
          return void s.write(d);
        }
        buf = Buffer.concat([buf, d]);
        const p = parseProxyHeader(buf, 'any');
        if (p.kind === 'header') {
          entry.header = p.header;
          const rest = buf.subarray(p.length);
          entry.rest += rest.toString('latin1');
          if (rest.length > 0) s.write(rest);
        } else if (p.kind === 'error') s.destroy();
      });
      s.on('error', () => {});
      s.on('end', () => s.end());
    });
    ppSink.listen(0, '127.0.0.1');
    await once(ppSink, 'listening');
    const bport = (backend.address() as net.AddressInfo).port;
    const sport = (sink.address() as net.AddressInfo).port;
    const ppport = (ppSink.address() as net.AddressInfo).port;
    dir = tempDir();
    gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - { name: web, backends: [ "127.0.0.1:${bport}" ], healthCheck: { enabled: false } }
  - { name: sink, backends: [ "127.0.0.1:${sport}" ], healthCheck: { enabled: false } }
  - { name: pp-sink, backends: [ "127.0.0.1:${ppport}" ], healthCheck: { interval: 200ms, timeout: 150ms }, sendProxyProtocol: v1 }
listeners:
  - name: relay
    protocol: tcp
    listen: "127.0.0.1:0"
    upstream: pp-sink
    proxyProtocol: { trustedProxies: [ 127.0.0.1/32 ] }
  - name: lb
    protocol: http
    listen: "127.0.0.1:0"
    proxyProtocol: { trustedProxies: [ 127.0.0.1/32 ] }
    routes: [ { name: all, upstream: web } ]
  - name: public
    protocol: http
    listen: "127.0.0.1:0"
    proxyProtocol: { accept: v1, trustedProxies: [ 10.0.0.0/8 ] }
    routes: [ { name: all, upstream: web } ]
  - name: lb-tls
    protocol: http
    listen: "127.0.0.1:0"
    proxyProtocol: { accept: v2, trustedProxies: [ 127.0.0.1/32 ] }
    tls: { certificates: [ { cert: "${leaf.certFile}", key: "${leaf.keyFile}" } ] }
    routes: [ { name: all, upstream: web } ]
  - name: lb-tcp
    protocol: tcp
    listen: "127.0.0.1:0"
    upstream: sink
    maxConnectionsPerIp: 1
    proxyProtocol: { trustedProxies: [ 127.0.0.1/32 ] }
  - name: lb-hub
    protocol: hub
    listen: "127.0.0.1:0"
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "ws://127.0.0.1:9/gate" } ]
    proxyProtocol: { trustedProxies: [ 127.0.0.1/32 ] }
`,
      ),
    );
  });

  afterAll(async () => {
    try {
      await gh?.[Symbol.asyncDispose]();
    } finally {
      backend?.close();
      sink?.close();
      ppSink?.close();
      dir?.[Symbol.dispose]();
      certs?.[Symbol.dispose]();
    }
  });

  afterEach(async () => {
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  test('from a trusted load balancer: the carried address is the client (X-Forwarded-For), v1 and v2; a connection without the header is closed', async () => {
    const req = 'GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
    expect(await exchange(gh.port('lb'), [V1('203.0.113.7'), req])).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('203.0.113.7');
    const v2 = encodeProxyHeader({ version: 2, source: { address: '2001:db8::42', port: 40000 }, destination: { address: '2001:db8::1', port: 443 } });
    expect(await exchange(gh.port('lb'), [v2, req])).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('2001:db8::42');
    // A LOCAL header (a health check of the load balancer): the peer's own address.
    expect(await exchange(gh.port('lb'), [encodeProxyHeader({ version: 2 }), req])).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('127.0.0.1');
    // No header from a trusted peer: closed before anything is answered.
    expect(await exchange(gh.port('lb'), [req])).toBe('');
  });

  test('malformed headers (truncated, wrong signature, oversized, bad fields) are refused without harm to other connections', async () => {
    // A client through the load balancer, kept open across the bad ones.
    const good = net.connect(gh.port('lb'), '127.0.0.1');
    await once(good, 'connect');
    good.write(V1('203.0.113.77'));
    const ask = async (path: string): Promise<string> => {
      let got = '';
      const onData = (d: Buffer) => (got += d.toString('latin1'));
      good.on('data', onData);
      good.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const deadline = Date.now() + 5_000;
      while (!got.includes('\r\n\r\nok') && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      good.off('data', onData);
      return got;
    };
    expect(await ask('/before')).toMatch(/^HTTP\/1\.1 200 /);
    const req = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n';
    const v2 = encodeProxyHeader({ version: 2, source: { address: '192.0.2.1', port: 1 }, destination: { address: '192.0.2.2', port: 2 } });
    const badSig = Buffer.from(v2);
    badSig[5] ^= 0xff;
    const bad: (string | Buffer)[][] = [
      ['PROXY TCP4 203.0.113.1 10.0.0.1 51000 80\r'], // truncated, then the client closes
      [badSig, req],
      [`PROXY TCP4 ${'1'.repeat(120)}\r\n`, req], // over v1's 107 bytes
      ['PROXY TCP4 203.0.113.300 10.0.0.1 51000 80\r\n', req], // no such address
      ['PROXY TCP4 203.0.113.1 10.0.0.1 051000 80\r\n', req], // leading zero
      [Buffer.concat([v2.subarray(0, 14), Buffer.from([0xff, 0xff])]), req], // v2 length over the cap
    ];
    for (const bytes of bad) {
      const s = net.connect(gh.port('lb'), '127.0.0.1');
      s.on('error', () => {});
      await once(s, 'connect');
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.write(Buffer.concat(bytes.map((b) => (typeof b === 'string' ? Buffer.from(b, 'latin1') : b))));
      if (bytes.length === 1 && bytes === bad[0]) s.end();
      await once(s, 'close');
      expect(got).toBe('');
    }
    const before = seen.length;
    expect(await ask('/after')).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.length).toBe(before + 1);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('203.0.113.77');
    good.destroy();
  });

  test('from any other peer: plain requests are served, a PROXY header closes the connection', async () => {
    const req = 'GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
    expect(await exchange(gh.port('public'), [req])).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('127.0.0.1');
    expect(await exchange(gh.port('public'), [V1('203.0.113.9'), req])).toBe('');
    const closedBy = await gh.waitForLog((l) => l.msg === 'PROXY protocol: connection closed' && l.reason === 'untrusted_header');
    expect(closedBy.remoteAddress).toBe('127.0.0.1');
  });

  test('PROXY protocol then TLS: the header precedes the handshake, the client address reaches the backend', async () => {
    const raw = net.connect(gh.port('lb-tls'), '127.0.0.1');
    await once(raw, 'connect');
    raw.write(encodeProxyHeader({ version: 2, source: { address: '198.51.100.5', port: 1234 }, destination: { address: '10.0.0.1', port: 443 } }));
    const s = tls.connect({ socket: raw, servername: 'web.example.test', ca: ca.certPem });
    await once(s, 'secureConnect');
    s.write('GET /c HTTP/1.1\r\nHost: web.example.test\r\nConnection: close\r\n\r\n');
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    await once(s, 'end');
    s.destroy();
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.at(-1)!['x-forwarded-for']).toBe('198.51.100.5');
    expect(seen.at(-1)!['x-forwarded-proto']).toBe('https');
  });

  test('tcp: maxConnectionsPerIp counts the carried address, not the load balancer\'s', async () => {
    const open = async (src: string) => {
      const s = net.connect(gh.port('lb-tcp'), '127.0.0.1');
      s.on('error', () => {});
      await once(s, 'connect');
      s.write(V1(src));
      return s;
    };
    const a = await open('192.0.2.1');
    const b = await open('192.0.2.2');
    const deadline = Date.now() + 5_000;
    while (sinkConns.length < 2 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(sinkConns.length).toBe(2);
    // A second connection from 192.0.2.1: over its per-IP limit, closed at once.
    const c = await open('192.0.2.1');
    await once(c, 'close');
    a.destroy();
    b.destroy();
  });

  test('sendProxyProtocol: the backend gets a header naming the client (as carried in), then the bytes; health probes send LOCAL', async () => {
    const s = net.connect(gh.port('relay'), '127.0.0.1');
    await once(s, 'connect');
    s.write(V1('192.0.2.50', 40123));
    s.write('hello');
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    const deadline = Date.now() + 5_000;
    while (got !== 'hello' && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(got).toBe('hello');
    const mine = ppSeen.find((e) => e.rest === 'hello')!;
    expect(mine.header).toMatchObject({ version: 1, command: 'proxy', family: 'tcp4', source: { address: '192.0.2.50', port: 40123 }, destination: { address: '127.0.0.1', port: gh.port('relay') } });
    s.end();
    await once(s, 'close');
    // The tcp health probe's connections carry a header without a client.
    expect(ppSeen.some((e) => e.header?.command === 'proxy' && e.header.family === 'unknown')).toBe(true);
  });

  test('hub: the upgrade request after the header reaches the hub (401 without a token)', async () => {
    const got = await exchange(gh.port('lb-hub'), [
      V1('203.0.113.20'),
      'GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    ]);
    expect(got).toMatch(/^HTTP\/1\.1 401 /);
  });
});
