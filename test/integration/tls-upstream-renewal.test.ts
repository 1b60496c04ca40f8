import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { renameSync, writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { testCerts, type TestCert, type TestCerts } from '../helpers/tls-certs.ts';
import { backendView, metricsText } from '../helpers/upstreams.ts';

/**
 * Upstream `tls` files are watched: the backends move to a certificate from a new CA and the
 * upstreams' `ca` file is replaced (as certbot and cert-manager do, by a rename); new requests,
 * TCP connections and health probes verify against the new CA on both shards, with no reload.
 * A broken file is logged, counted, and the previous CA kept.
 */

/** Replaces a file the way certbot and cert-manager do: a new file renamed over the old one. */
function replace(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

describe('upstream TLS files renewed without a reload (workers: 2)', () => {
  let certs: TestCerts;
  let oldCa: TestCert;
  let newCa: TestCert;
  let oldLeaf: TestCert;
  let newLeaf: TestCert;
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let caFile: string;
  let web: https.Server;
  let echo: tls.Server;
  /** Requests the backend served: path and when. */
  const seen: { path: string; at: number }[] = [];

  beforeAll(async () => {
    certs = testCerts();
    oldCa = await certs.ca('old-ca');
    newCa = await certs.ca('new-ca');
    oldLeaf = await certs.leaf('old-backend', { ca: oldCa, cn: 'backend.example.test', dns: ['backend.example.test'] });
    newLeaf = await certs.leaf('new-backend', { ca: newCa, cn: 'backend.example.test', dns: ['backend.example.test'] });
    // Every answer closes its connection: each request is a new TLS handshake to the backend.
    web = https.createServer({ key: oldLeaf.keyPem, cert: oldLeaf.certPem }, (req, res) => {
      seen.push({ path: req.url!, at: Date.now() });
      res.setHeader('connection', 'close');
      res.end(`web ${req.url}`);
    });
    echo = tls.createServer({ key: oldLeaf.keyPem, cert: oldLeaf.certPem }, (s) => s.pipe(s));
    web.listen(0, '127.0.0.1');
    echo.listen(0, '127.0.0.1');
    await Promise.all([once(web, 'listening'), once(echo, 'listening')]);
    const port = (s: net.Server) => (s.address() as net.AddressInfo).port;
    dir = tempDir();
    caFile = dir.write('backends-ca.pem', oldCa.certPem);
    gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - name: web
    backends: [ "127.0.0.1:${port(web)}" ]
    healthCheck: { type: http, path: /healthz, interval: 200ms, timeout: 150ms, unhealthyThreshold: 20 }
    circuitBreaker: { enabled: false }
    tls: { ca: "${caFile}", serverName: backend.example.test }
  - name: echo
    backends: [ "127.0.0.1:${port(echo)}" ]
    healthCheck: { enabled: false }
    circuitBreaker: { enabled: false }
    tls: { ca: "${caFile}", serverName: backend.example.test }
listeners:
  - name: http
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: web, upstream: web } ]
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
      dir?.[Symbol.dispose]();
      certs?.[Symbol.dispose]();
    }
  });

  afterEach(async () => {
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  /** Status and body of a GET on a fresh client connection (it lands on either shard). */
  function get(path: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const s = net.connect(gh.port('http'), '127.0.0.1');
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.on('error', reject);
      s.on('close', () => {
        const [head = '', body = ''] = text.split('\r\n\r\n');
        resolve({ status: Number(head.split(' ')[1]), body });
      });
      s.write(`GET ${path} HTTP/1.1\r\nHost: gh.test\r\nConnection: close\r\n\r\n`);
    });
  }

  /** What a TLS backend echoes through the tcp listener on a fresh connection ('' when the backend connection failed). */
  async function echoed(text: string): Promise<string> {
    const s = net.connect(gh.port('tcp'), '127.0.0.1');
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', () => {});
    await once(s, 'connect');
    s.end(text);
    await once(s, 'close');
    return got;
  }

  /** 8 fresh client connections in a row (spread over both shards by the kernel): every one 200. */
  async function allOk(tag: string): Promise<boolean> {
    for (let i = 0; i < 8; i++) if ((await get(`/${tag}/${i}`)).status !== 200) return false;
    return true;
  }

  test('a new CA in the upstream ca file: new requests, TCP connections and probes verify against it, without a reload', async () => {
    expect(await allOk('before')).toBe(true);
    expect(await echoed('ping')).toBe('ping');

    // Rotation: the CA file first (requests keep working meanwhile: no new handshake needs it
    // before the backends move), then the backends' certificates.
    replace(caFile, newCa.certPem);
    await gh.waitForLog((l) => l.msg === 'upstream TLS files reloaded: new backend connections use them' && l.upstream === 'web');
    await gh.waitForLog((l) => l.msg === 'upstream TLS files reloaded: new backend connections use them' && l.upstream === 'echo');
    web.setSecureContext({ key: newLeaf.keyPem, cert: newLeaf.certPem });
    echo.setSecureContext({ key: newLeaf.keyPem, cert: newLeaf.certPem });
    const switched = Date.now();

    // Every shard has the new CA within seconds (the config push follows the file event).
    await until(() => allOk('after'), 10_000, 'every request verified against the new CA');
    await until(async () => (await echoed('pong')) === 'pong', 10_000, 'a TCP connection verified against the new CA');
    // A probe over the old CA would fail its handshake and never reach the backend.
    await until(() => seen.some((s) => s.path === '/healthz' && s.at > switched + 50), 10_000, 'a probe verified against the new CA');
    const addr = `127.0.0.1:${(web.address() as net.AddressInfo).port}`;
    expect((await backendView(gh, 'web', addr))?.healthy).toBe(true);
  });

  test('a broken ca file is logged and counted (label upstream); the CA in use stays', async () => {
    replace(caFile, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    const log = await gh.waitForLog((l) => l.msg === 'upstream TLS file changed but failed its check: the previous one stays in use' && l.upstream === 'web');
    expect(log.level).toBe(50);
    await until(async () => (metric(await metricsText(gh), 'gatehouse_tls_reload_errors_total', { upstream: 'web' }) ?? 0) >= 1, 5_000, 'the reload error counted');
    expect(await allOk('kept')).toBe(true);
    expect(await echoed('still')).toBe('still');
  });
});
