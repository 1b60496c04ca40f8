import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { testCerts, type TestCert, type TestCerts } from '../helpers/tls-certs.ts';
import { WebSocket } from 'ws';
import { HubNode } from '../helpers/hub-node.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';
import { findNodes, metricsText, type ActorNode } from '../helpers/upstreams.ts';

/**
 * TLS termination on http, tcp and hub listeners, end to end: the daemon from its CLI with two
 * shards, certificates made with openssl, real TLS clients that verify against the test CA.
 */

interface Got {
  status: number;
  body: string;
  subject: string;
  serial: string;
  protocol: string | null;
}

/** An HTTPS GET through the gateway, verifying the certificate for `servername` against `ca`. */
function get(port: number, servername: string | undefined, ca: string, reqPath = '/'): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: reqPath, servername, ca, agent: false, headers: { host: servername ?? '127.0.0.1' }, checkServerIdentity: () => undefined },
      (res) => {
        const sock = res.socket as tls.TLSSocket;
        const cert = sock.getPeerCertificate();
        const protocol = sock.getProtocol();
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body, subject: String(cert.subject?.CN), serial: cert.serialNumber, protocol }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The certificate a bare handshake gets (no HTTP), or the handshake's error. */
async function handshake(port: number, servername: string | undefined, ca: string): Promise<{ subject: string; serial: string }> {
  const s = tls.connect({ host: '127.0.0.1', port, servername, ca, checkServerIdentity: () => undefined });
  try {
    await once(s, 'secureConnect');
    const c = s.getPeerCertificate();
    return { subject: String(c.subject?.CN), serial: c.serialNumber };
  } finally {
    s.destroy();
  }
}

/** Replaces a file the way certbot and cert-manager do: a new file renamed over the old one. */
function replace(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

describe('TLS on listeners (workers: 2)', () => {
  let certs: TestCerts;
  let ca: TestCert;
  let siteA: TestCert;
  let wild: TestCert;
  let alice: TestCert;
  let mallory: TestCert;
  let dir: ReturnType<typeof tempDir>;
  let gh: Daemon;
  let backend: http.Server;
  let echo: net.Server;
  const seen: http.IncomingHttpHeaders[] = [];

  beforeAll(async () => {
    certs = testCerts();
    ca = await certs.ca('ca');
    siteA = await certs.leaf('site-a', { ca, cn: 'a.example.test', dns: ['a.example.test'] });
    wild = await certs.leaf('wild', { ca, cn: 'wild.example.test', dns: ['*.wild.example.test'] });
    alice = await certs.client('alice', ca, { cn: 'alice, of Example' });
    mallory = await certs.client('mallory', await certs.ca('other-ca'));
    backend = http.createServer((req, res) => {
      seen.push(req.headers);
      res.end(`hello ${req.url}`);
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.pipe(s);
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    dir = tempDir();
    const bport = (backend.address() as net.AddressInfo).port;
    const eport = (echo.address() as net.AddressInfo).port;
    // Certificate paths relative to the config file: they resolve against its directory.
    const rel = (f: string) => path.relative(dir.dir, f);
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
log: { level: info }
upstreams:
  - { name: web, backends: [ "127.0.0.1:${bport}" ], healthCheck: { enabled: false } }
  - { name: echo, backends: [ "127.0.0.1:${eport}" ], healthCheck: { enabled: false } }
listeners:
  - name: https
    protocol: http
    listen: "127.0.0.1:0"
    tls:
      certificates:
        - { cert: "${rel(siteA.certFile)}", key: "${rel(siteA.keyFile)}", serverNames: [ a.example.test ] }
        - { cert: "${wild.certFile}", key: "${wild.keyFile}" }
      handshakeTimeout: 1s
    routes:
      - { name: all, upstream: web }
  - name: mtls
    protocol: http
    listen: "127.0.0.1:0"
    tls:
      certificates: [ { cert: "${siteA.certFile}", key: "${siteA.keyFile}" } ]
      clientAuth: { ca: "${ca.certFile}" }
    routes:
      - { name: all, upstream: web }
  - name: mtls-optional
    protocol: http
    listen: "127.0.0.1:0"
    tls:
      certificates: [ { cert: "${siteA.certFile}", key: "${siteA.keyFile}" } ]
      clientAuth: { ca: "${ca.certFile}", required: false }
    routes:
      - { name: all, upstream: web }
  - name: tcps
    protocol: tcp
    listen: "127.0.0.1:0"
    upstream: echo
    tls:
      certificates: [ { cert: "${siteA.certFile}", key: "${siteA.keyFile}" } ]
`,
    );
    gh = await Daemon.start(file);
  });

  afterAll(async () => {
    try {
      await gh?.[Symbol.asyncDispose]();
    } finally {
      backend?.close();
      echo?.close();
      dir?.[Symbol.dispose]();
      certs?.[Symbol.dispose]();
    }
  });

  afterEach(async () => {
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  test('https: the certificate is chosen by SNI (exact, then wildcard, else the first); the backend sees X-Forwarded-Proto https', async () => {
    const port = gh.port('https');
    const a = await get(port, 'a.example.test', ca.certPem, '/x');
    expect(a).toMatchObject({ status: 200, body: 'hello /x', subject: 'a.example.test' });
    expect(a.protocol).toBe('TLSv1.3');
    const w = await get(port, 'b.wild.example.test', ca.certPem);
    expect(w.subject).toBe('wild.example.test');
    // Not covered by any name (and a wildcard covers one label only): the first certificate.
    expect((await handshake(port, 'x.b.wild.example.test', ca.certPem)).subject).toBe('a.example.test');
    expect((await handshake(port, undefined, ca.certPem)).subject).toBe('a.example.test');
    expect(seen.at(-1)!['x-forwarded-proto']).toBe('https');
  });

  test('mutual TLS: the verified subject reaches the backend in X-Client-Cert-Subject (a client cannot send its own); no or a foreign certificate fails the handshake; optional mode serves every client', async () => {
    const request = (port: number, cert?: TestCert) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
        const req = https.request(
          { host: '127.0.0.1', port, path: '/m', servername: 'a.example.test', ca: ca.certPem, agent: false, ...(cert && { cert: cert.certPem, key: cert.keyPem }), headers: { 'x-client-cert-subject': 'CN=admin' } },
          (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode!, headers: seen.at(-1)! }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    const ok = await request(gh.port('mtls'), alice);
    expect(ok.status).toBe(200);
    expect(ok.headers['x-client-cert-subject']).toBe('CN=alice\\2C of Example');
    await expect(request(gh.port('mtls'))).rejects.toThrow();
    await expect(request(gh.port('mtls'), mallory)).rejects.toThrow();
    const anon = await request(gh.port('mtls-optional'));
    expect(anon.status).toBe(200);
    expect(anon.headers['x-client-cert-subject']).toBeUndefined();
    const foreign = await request(gh.port('mtls-optional'), mallory);
    expect(foreign.headers['x-client-cert-subject']).toBeUndefined();
    expect((await request(gh.port('mtls-optional'), alice)).headers['x-client-cert-subject']).toBe('CN=alice\\2C of Example');
  });

  test('sessions resume on any shard: the ticket keys are shared (TLS 1.3 tickets, TLS 1.2 too)', async () => {
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = tls.connect({ host: '127.0.0.1', port: gh.port('https'), servername: 'a.example.test', ca: ca.certPem, maxVersion });
      const [session] = (await once(first, 'session')) as [Buffer];
      first.destroy();
      // Fresh connections land on either of the two shards: every one of them resumes.
      for (let i = 0; i < 8; i++) {
        const s = tls.connect({ host: '127.0.0.1', port: gh.port('https'), servername: 'a.example.test', ca: ca.certPem, maxVersion, session });
        await once(s, 'secureConnect');
        expect(s.isSessionReused()).toBe(true);
        s.destroy();
      }
    }
  });

  test('TLS 1.3: every resumption brings a new ticket, so a client keeping only its last one resumes 10 times in a row', async () => {
    /** One GET on a fresh connection offering `session`: whether it resumed, and the tickets it got. */
    const connect = async (session: Buffer | undefined): Promise<{ resumed: boolean; tickets: Buffer[]; status: string }> => {
      const s = tls.connect({ host: '127.0.0.1', port: gh.port('https'), servername: 'a.example.test', ca: ca.certPem, maxVersion: 'TLSv1.3', ...(session && { session }) });
      const tickets: Buffer[] = [];
      s.on('session', (t: Buffer) => tickets.push(t));
      await once(s, 'secureConnect');
      const resumed = s.isSessionReused();
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.write('GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n');
      await once(s, 'close');
      return { resumed, tickets, status: text.split('\r\n')[0] ?? '' };
    };
    const first = await connect(undefined);
    expect(first.resumed).toBe(false);
    let ticket = first.tickets.at(-1);
    expect(ticket).toBeDefined();
    // Like wrk or curl: each connection offers only the newest ticket, the one the last connection got.
    const resumed: boolean[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await connect(ticket);
      expect(r.status).toBe('HTTP/1.1 200 OK');
      resumed.push(r.resumed);
      expect(r.tickets.length).toBeGreaterThan(0);
      ticket = r.tickets.at(-1);
    }
    expect(resumed).toEqual(Array.from({ length: 10 }, () => true));
  });

  test('tcp: bytes cross a TLS listener both ways, and a half-close goes through', async () => {
    const s = tls.connect({ host: '127.0.0.1', port: gh.port('tcps'), servername: 'a.example.test', ca: ca.certPem, allowHalfOpen: true } as tls.ConnectionOptions);
    await once(s, 'secureConnect');
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.end('ping over tls');
    await once(s, 'end');
    expect(got).toBe('ping over tls');
    s.destroy();
  });

  test('tcp over TLS: 24 MiB written from the first moment (with the handshake) come back byte for byte, from several connections at once', async () => {
    // The listener reads decrypted records into reused buffers: what a record brought must be
    // forwarded before the next one overwrites it, and the bytes decrypted with the handshake first.
    const one = async (seed: number): Promise<void> => {
      const data = randomBytes(8 * 1024 * 1024 + seed);
      const s = tls.connect({ host: '127.0.0.1', port: gh.port('tcps'), servername: 'a.example.test', ca: ca.certPem, allowHalfOpen: true } as tls.ConnectionOptions);
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      // Written before the handshake completes, in uneven pieces, then half-closed.
      for (let off = 0, k = 1; off < data.length; k++) {
        const n = Math.min(data.length - off, ((k * 7919) % 70_000) + 1);
        s.write(data.subarray(off, off + n));
        off += n;
      }
      s.end();
      await once(s, 'end');
      s.destroy();
      const back = Buffer.concat(got);
      expect(back.length).toBe(data.length);
      expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    };
    await Promise.all([one(1), one(2), one(3)]);
  });

  test('a client that does not speak TLS is closed, counted, and its listener place given back', async () => {
    const s = net.connect(gh.port('https'), '127.0.0.1');
    s.on('error', () => {});
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await once(s, 'close');
    // A client that connects and says nothing is closed at handshakeTimeout (1 s).
    const quiet = net.connect(gh.port('https'), '127.0.0.1');
    quiet.on('error', () => {});
    await once(quiet, 'close');
    const nodes = findNodes(await gh.json<ActorNode>('/actors'), (n) => n.id === 'listener:https');
    const handshakes = nodes.map((n) => (n.node.tls as { handshakes: { error: number } }).handshakes.error);
    expect(handshakes.reduce((x, y) => x + y, 0)).toBeGreaterThanOrEqual(2);
    const text = await metricsText(gh);
    expect(metric(text, 'gatehouse_tls_handshakes_total', { listener: 'https', result: 'error' })).toBeGreaterThanOrEqual(2);
    expect(metric(text, 'gatehouse_tls_handshakes_total', { listener: 'https', result: 'ok' })).toBeGreaterThanOrEqual(1);
    // The certificate's notAfter, named by its first server name.
    const expiry = metric(text, 'gatehouse_tls_certificate_expiry_timestamp_seconds', { listener: 'https', name: 'a.example.test' })!;
    expect(expiry * 1000).toBeGreaterThan(Date.now() + 29 * 86_400_000);
  });

  test('/actors shows each TLS connection\'s protocol, cipher and SNI', async () => {
    const s = tls.connect({ host: '127.0.0.1', port: gh.port('tcps'), servername: 'a.example.test', ca: ca.certPem });
    await once(s, 'secureConnect');
    try {
      const conn = await until(async () => {
        const found = findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'connection' && n.tls !== undefined);
        return found.length > 0 ? found[0]!.node : undefined;
      }, 5_000, 'the TLS connection in /actors');
      expect(conn!.tls).toMatchObject({ protocol: 'TLSv1.3', servername: 'a.example.test' });
      expect(String((conn!.tls as { cipher: string }).cipher)).toMatch(/^TLS_/);
    } finally {
      s.destroy();
    }
  });

  test('a renewed certificate is used for new handshakes within seconds, on every shard; a broken one is refused and the last good one kept', async () => {
    const port = gh.port('https');
    const before = await handshake(port, 'a.example.test', ca.certPem);
    // An open connection from before the renewal keeps working.
    const open = tls.connect({ host: '127.0.0.1', port: gh.port('tcps'), servername: 'a.example.test', ca: ca.certPem });
    await once(open, 'secureConnect');
    const renewed = await certs.leaf('site-a-2', { ca, cn: 'a.example.test', dns: ['a.example.test'] });
    // Under load: a loop of fresh handshakes runs through the renewal; none of them may fail,
    // each sees the old or the new serial, and once the new one shows, ten in a row see it
    // (fresh connections land on either shard). Bounded: 2,000 handshakes or 15 s.
    let failed = 0;
    let seenNew = 0;
    let inARow = 0;
    const serials = new Set<string>();
    const loop = (async () => {
      const end = Date.now() + 15_000;
      for (let i = 0; i < 2_000 && Date.now() < end && inARow < 10; i++) {
        try {
          const h = await handshake(port, 'a.example.test', ca.certPem);
          serials.add(h.serial);
          if (h.serial !== before.serial) {
            seenNew++;
            inARow++;
          } else inARow = 0;
        } catch {
          failed++;
        }
      }
    })();
    replace(siteA.keyFile, renewed.keyPem);
    replace(siteA.certFile, renewed.certPem);
    await loop;
    expect(failed).toBe(0);
    expect(inARow).toBe(10);
    expect(seenNew).toBeGreaterThanOrEqual(10);
    expect(serials.size).toBe(2);
    const now = await handshake(port, 'a.example.test', ca.certPem);
    expect(now.serial).not.toBe(before.serial);
    open.write('still here');
    const [echoed] = (await once(open, 'data')) as [Buffer];
    expect(String(echoed)).toBe('still here');
    open.destroy();

    // A key that does not match: logged, the renewed pair stays in use.
    const other = await certs.key('other');
    replace(siteA.keyFile, other.keyPem);
    await gh.waitForLog((l) => String(l.msg).includes('failed its check'), 10_000);
    expect((await handshake(port, 'a.example.test', ca.certPem)).serial).toBe(now.serial);
    expect(metric(await metricsText(gh), 'gatehouse_tls_reload_errors_total', { listener: 'https' })).toBeGreaterThanOrEqual(1);
    replace(siteA.keyFile, renewed.keyPem);
  });
});

describe('TLS on a hub listener', () => {
  test('wss: a client with a token registers over TLS (its client proxy shows the TLS details); without one it gets 401 over TLS; plain HTTPS gets 426', async () => {
    using certs = testCerts();
    const ca = await certs.ca('ca');
    const leaf = await certs.leaf('hub', { ca, cn: 'hub.example.test', dns: ['hub.example.test'] });
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${node.url}" } ]
    tls: { certificates: [ { cert: "${leaf.certFile}", key: "${leaf.keyFile}" } ] }
`,
      ),
    );
    await node.waitFor((f) => f.type === 'hello');
    const port = gh.port('hub');
    const opts = { ca: ca.certPem, servername: 'hub.example.test' };

    const ws = new WebSocket(`wss://127.0.0.1:${port}/connect`, { ...opts, headers: { authorization: `Bearer ${await tokenFor('alice')}` } });
    const first = new Promise<Record<string, unknown>>((resolve, reject) => {
      ws.once('message', (d) => resolve(JSON.parse(String(d)) as Record<string, unknown>));
      ws.once('error', reject);
    });
    expect((await first).type).toBe('welcome');
    const proxy = await until(async () => findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'client-proxy')[0]?.node, 5_000, 'the client proxy');
    expect(proxy.tls).toMatchObject({ protocol: 'TLSv1.3', servername: 'hub.example.test', alpn: false });
    ws.close();
    await once(ws, 'close');

    const anon = new WebSocket(`wss://127.0.0.1:${port}/connect`, opts);
    anon.on('error', () => {}); // terminate() before the (refused) upgrade reports one
    const [, res] = (await once(anon, 'unexpected-response')) as [unknown, http.IncomingMessage];
    expect(res.statusCode).toBe(401);
    res.resume();
    anon.terminate();

    const plain = await get(port, 'hub.example.test', ca.certPem, '/connect');
    expect(plain.status).toBe(426);
    expect(await gh.idleLeftovers()).toEqual([]);
  });
});

describe('a hub listener identified by client certificates', () => {
  test('no auth.jwt, tls.clientAuth required: the certificate\'s CN is the user id; a client without one cannot connect', async () => {
    using certs = testCerts();
    const ca = await certs.ca('ca');
    const leaf = await certs.leaf('hub', { ca, cn: 'hub.example.test', dns: ['hub.example.test'] });
    const carol = await certs.client('carol', ca, { cn: 'carol' });
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    nodes: [ { id: n1, url: "${node.url}" } ]
    tls: { certificates: [ { cert: "${leaf.certFile}", key: "${leaf.keyFile}" } ], clientAuth: { ca: "${ca.certFile}" } }
`,
      ),
    );
    await node.waitFor((f) => f.type === 'hello');
    const opts = { ca: ca.certPem, servername: 'hub.example.test' };
    const ws = new WebSocket(`wss://127.0.0.1:${gh.port('hub')}/connect`, { ...opts, cert: carol.certPem, key: carol.keyPem });
    await once(ws, 'open');
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'carol' && f.online === true);
    ws.close();
    await once(ws, 'close');
    const anon = new WebSocket(`wss://127.0.0.1:${gh.port('hub')}/connect`, opts);
    const failure = new Promise<Error>((resolve) => anon.once('error', resolve));
    // The handshake refuses it (TLS 1.3: the alert arrives with the first read).
    expect(String(await failure)).toMatch(/certificate required|socket hang up|ECONNRESET/);
    expect(await gh.idleLeftovers()).toEqual([]);
  });
});
