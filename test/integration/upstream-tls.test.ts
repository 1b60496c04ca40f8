import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { Client } from 'undici';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { testCerts, type TestCert, type TestCerts } from '../helpers/tls-certs.ts';
import { backendView } from '../helpers/upstreams.ts';

/**
 * Upstream `tls`: the daemon (two shards) originates TLS to real TLS backends, verifying them
 * against a test CA, with a client certificate, or not at all (`verify: false`).
 */
describe('TLS to backends (workers: 2)', () => {
  let certs: TestCerts;
  let ca: TestCert;
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let web: https.Server;
  let echo: tls.Server;
  let selfSigned: https.Server;
  /** Per backend: TLS connections accepted, requests (path and client certificate CN). */
  const seen = { web: [] as { path: string; clientCn: string | undefined; socket: net.Socket }[] };

  beforeAll(async () => {
    certs = testCerts();
    ca = await certs.ca('ca');
    const leaf = await certs.leaf('backend', { ca, cn: 'backend.example.test', dns: ['backend.example.test'] });
    const gw = await certs.client('gateway', ca, { cn: 'gatehouse' });
    const own = await certs.leaf('self', { cn: 'self.example.test', dns: ['self.example.test'] });
    web = https.createServer({ key: leaf.keyPem, cert: leaf.certPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const s = req.socket as tls.TLSSocket;
      seen.web.push({ path: req.url!, clientCn: s.authorized ? String(s.getPeerCertificate().subject?.CN) : undefined, socket: s });
      res.end(`web ${req.url}`);
    });
    web.listen(0, '127.0.0.1');
    echo = tls.createServer({ key: leaf.keyPem, cert: leaf.certPem }, (s) => s.pipe(s));
    echo.listen(0, '127.0.0.1');
    selfSigned = https.createServer({ key: own.keyPem, cert: own.certPem }, (_req, res) => res.end('self'));
    selfSigned.listen(0, '127.0.0.1');
    await Promise.all([once(web, 'listening'), once(echo, 'listening'), once(selfSigned, 'listening')]);
    const port = (s: net.Server) => (s.address() as net.AddressInfo).port;
    const other = await certs.ca('other-ca');
    dir = tempDir();
    gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - name: web
    backends: [ "127.0.0.1:${port(web)}" ]
    healthCheck: { type: http, path: /healthz, interval: 200ms, timeout: 150ms }
    circuitBreaker: { enabled: false }
    tls: { ca: "${ca.certFile}", serverName: backend.example.test, cert: "${gw.certFile}", key: "${gw.keyFile}" }
  - name: wrong-ca
    backends: [ "127.0.0.1:${port(web)}" ]
    healthCheck: { enabled: false }
    circuitBreaker: { enabled: false }
    connectRetries: 0
    tls: { ca: "${other.certFile}", serverName: backend.example.test }
  - name: self
    backends: [ "127.0.0.1:${port(selfSigned)}" ]
    healthCheck: { enabled: false }
    tls: { verify: false }
  - name: echo
    backends: [ "127.0.0.1:${port(echo)}" ]
    healthCheck: { enabled: false }
    tls: { ca: "${ca.certFile}", serverName: backend.example.test }
listeners:
  - name: http
    protocol: http
    listen: "127.0.0.1:0"
    routes:
      - { name: web, match: { pathPrefix: /web }, upstream: web }
      - { name: wrong, match: { pathPrefix: /wrong }, upstream: wrong-ca }
      - { name: self, match: { pathPrefix: /self }, upstream: self }
  - name: tcp
    protocol: tcp
    listen: "127.0.0.1:0"
    upstream: echo
`,
      ),
    );
  });

  afterAll(async () => {
    try {
      await gh?.[Symbol.asyncDispose]();
    } finally {
      web?.close();
      echo?.close();
      selfSigned?.close();
      dir?.[Symbol.dispose]();
      certs?.[Symbol.dispose]();
    }
  });

  afterEach(async () => {
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  test('http: requests reach a verified backend over pooled TLS connections, with the gateway\'s client certificate; http health probes speak TLS too', async () => {
    const client = new Client(`http://127.0.0.1:${gh.port('http')}`);
    try {
      for (let i = 0; i < 6; i++) {
        const r = await client.request({ path: `/web/${i}`, method: 'GET' });
        expect(r.statusCode).toBe(200);
        expect(await r.body.text()).toBe(`web /web/${i}`);
      }
      // One client connection lands on one shard: its six sequential requests share that
      // shard's one pooled TLS connection to the backend.
      const mine = seen.web.filter((w) => w.path.startsWith('/web/'));
      expect(new Set(mine.map((w) => w.socket)).size).toBe(1);
      expect(mine.every((w) => w.clientCn === 'gatehouse')).toBe(true);
    } finally {
      await client.close();
    }
    // The http probe's GETs arrive over TLS and keep the backend healthy.
    await until(() => seen.web.some((w) => w.path === '/healthz'), 5_000, 'a probe over TLS');
    const addr = `127.0.0.1:${(web.address() as net.AddressInfo).port}`;
    expect((await backendView(gh, 'web', addr))?.healthy).toBe(true);
  });

  test('a backend whose certificate does not verify is a connect failure: 502, never a request', async () => {
    const client = new Client(`http://127.0.0.1:${gh.port('http')}`);
    try {
      const r = await client.request({ path: '/wrong/x', method: 'GET' });
      expect(r.statusCode).toBe(502);
      await r.body.text();
    } finally {
      await client.close();
    }
    expect(seen.web.filter((w) => w.path.startsWith('/wrong'))).toEqual([]);
  });

  test('verify: false reaches a self-signed backend', async () => {
    const client = new Client(`http://127.0.0.1:${gh.port('http')}`);
    try {
      const r = await client.request({ path: '/self', method: 'GET' });
      expect(r.statusCode).toBe(200);
      expect(await r.body.text()).toBe('self');
    } finally {
      await client.close();
    }
    const log = await gh.waitForLog((l) => String(l.msg).startsWith('upstream tls.verify is false'));
    expect(log.upstream).toBe('self');
  });

  test('tcp: bytes cross to a TLS backend and back, and a half-close goes through', async () => {
    const s = net.connect(gh.port('tcp'), '127.0.0.1');
    await once(s, 'connect');
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.write('over tls to the backend');
    await until(() => got === 'over tls to the backend', 5_000, 'the echo');
    s.end();
    await once(s, 'close');
  });
});

