import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPair, type CertificatePair } from '../../src/tls/certificates.ts';
import { normaliseServerName, SniSelector, type SniContextOptions, type SniEntry } from '../../src/tls/sni.ts';
import { testCerts, type TestCert } from '../helpers/tls-certs.ts';

const certs = testCerts();
let ca: TestCert;
let otherCa: TestCert;
/** The default (first) certificate, an exact name, a wildcard, and one named by its own SANs. */
let fallback: CertificatePair;
let api: CertificatePair;
let wild: CertificatePair;
let sans: CertificatePair;
let client: TestCert;
let stranger: TestCert;

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([certs.ca('ca'), certs.ca('other-ca')]);
  const made = await Promise.all([
    certs.leaf('fallback', { ca, cn: 'fallback', dns: ['fallback.test'], ips: ['127.0.0.1'] }),
    certs.leaf('api', { ca, cn: 'api', dns: ['api.example.com'] }),
    certs.leaf('wild', { ca, cn: 'wild', dns: ['*.example.com'] }),
    certs.leaf('sans', { ca, cn: 'sans', dns: ['www.other.test', '*.other.test'] }),
    certs.client('alice', ca, { cn: 'alice' }),
    certs.client('mallory', otherCa, { cn: 'mallory' }),
  ]);
  [fallback, api, wild, sans] = made.slice(0, 4).map((c) => loadPair(c.certFile, c.keyFile));
  [client, stranger] = made.slice(4);
});
afterAll(() => certs[Symbol.dispose]());

/** Default first, then a wildcard listed before the exact name it also covers. */
function entries(): SniEntry[] {
  return [
    { pair: fallback, serverNames: ['fallback.test'] },
    { pair: wild, serverNames: ['*.Example.com.'] },
    { pair: api, serverNames: ['api.example.com'] },
    { pair: sans, serverNames: [] },
  ];
}

describe('SniSelector.indexFor', () => {
  const sel = (): SniSelector => new SniSelector(entries());

  it('prefers an exact name to a wildcard, whatever the order', () => {
    expect(sel().indexFor('api.example.com')).toBe(2);
    expect(sel().indexFor('www.example.com')).toBe(1);
  });

  it('lets a wildcard cover exactly one label', () => {
    const s = sel();
    expect(s.indexFor('a.example.com')).toBe(1);
    expect(s.indexFor('a.b.example.com')).toBe(0);
    expect(s.indexFor('example.com')).toBe(0);
    expect(s.indexFor('.example.com')).toBe(0);
  });

  it('ignores case and a trailing dot, on both sides', () => {
    const s = sel();
    expect(s.indexFor('API.Example.COM.')).toBe(2);
    expect(s.indexFor('X.EXAMPLE.com.')).toBe(1);
    expect(normaliseServerName('A.B.')).toBe('a.b');
  });

  it('falls back to the first certificate for no name or an unknown one', () => {
    const s = sel();
    expect(s.indexFor(undefined)).toBe(0);
    expect(s.indexFor('')).toBe(0);
    expect(s.indexFor('unknown.test')).toBe(0);
    expect(s.select('unknown.test')).toBe(s.default);
    expect(s.select('api.example.com')).toBe(s.contexts[2]);
  });

  it('uses the SAN DNS names of a certificate listed without serverNames', () => {
    const s = sel();
    expect(s.indexFor('www.other.test')).toBe(3);
    expect(s.indexFor('mail.other.test')).toBe(3);
    expect(s.indexFor('other.test')).toBe(0);
  });

  it('gives a name listed twice to the certificate listed first', () => {
    const s = new SniSelector([
      { pair: fallback, serverNames: [] },
      { pair: api, serverNames: ['dup.test', '*.dup.test'] },
      { pair: wild, serverNames: ['DUP.test', '*.dup.test'] },
    ]);
    expect(s.indexFor('dup.test')).toBe(1);
    expect(s.indexFor('x.dup.test')).toBe(1);
  });

  it('needs at least one certificate', () => {
    expect(() => new SniSelector([])).toThrow(RangeError);
  });

  it('describes each certificate for the admin API', () => {
    expect(sel().describe()).toEqual([
      expect.objectContaining({ index: 0, name: 'fallback', serverNames: ['fallback.test'], default: true, certFile: fallback.certFile }),
      expect.objectContaining({ index: 1, name: 'wild', serverNames: ['*.example.com'], default: false }),
      expect.objectContaining({ index: 2, name: 'api', subject: 'CN=api', issuer: 'CN=ca', notAfter: api.notAfter.toISOString(), fingerprint256: api.fingerprint256 }),
      expect.objectContaining({ index: 3, name: 'sans', serverNames: ['www.other.test', '*.other.test'] }),
    ]);
  });
});

/** A real TLS server on 127.0.0.1 that picks its certificate with a selector. */
async function serve(sel: SniSelector, extra: tls.TlsOptions = {}): Promise<{ port: number } & AsyncDisposable> {
  const server = tls.createServer({ ...sel.defaultOptions, SNICallback: sel.sniCallback, ...extra }, (s) => s.end('hello'));
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    [Symbol.asyncDispose]: async () => {
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Connects, reads until the server closes, and returns the CN of the certificate the server
 * showed, what it sent, and the error the connection ended with, if any. A server that refuses
 * a client certificate may just hang up: then `body` is empty.
 */
async function connect(port: number, opts: tls.ConnectionOptions): Promise<{ cn?: string; body: string; error?: string }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, ...opts });
  const out: { cn?: string; body: string; error?: string } = { body: '' };
  socket.on('secureConnect', () => {
    out.cn = socket.getPeerCertificate().subject?.CN as string | undefined;
  });
  socket.on('data', (d: Buffer) => (out.body += d.toString()));
  socket.on('error', (err: NodeJS.ErrnoException) => (out.error ??= err.code ?? err.message));
  // Not `once(socket, 'close')`: it rejects on the 'error' that comes first.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('connection not closed within 5 s'));
    }, 5_000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return out;
}

describe('SniSelector behind a real tls.Server', () => {
  it('serves the certificate for each name a client asks for, verified against the CA', async () => {
    await using srv = await serve(new SniSelector(entries()));
    expect(await connect(srv.port, { servername: 'api.example.com' })).toEqual({ cn: 'api', body: 'hello' });
    expect(await connect(srv.port, { servername: 'shop.example.com' })).toEqual({ cn: 'wild', body: 'hello' });
    expect(await connect(srv.port, { servername: 'WWW.Other.Test' })).toEqual({ cn: 'sans', body: 'hello' });
    expect(await connect(srv.port, { servername: 'fallback.test' })).toEqual({ cn: 'fallback', body: 'hello' });
  });

  it('serves the default certificate to an unknown name and to a client that sends none', async () => {
    await using srv = await serve(new SniSelector(entries()));
    // The default certificate is not valid for the name asked: the client sees it and refuses.
    expect(await connect(srv.port, { servername: 'a.b.example.com' })).toMatchObject({ body: '', error: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    const shown = await connect(srv.port, { servername: 'a.b.example.com', checkServerIdentity: () => undefined });
    expect(shown.cn).toBe('fallback');
    // An IP address as host: Node sends no SNI; the default certificate has the IP in its SANs.
    expect(await connect(srv.port, {})).toEqual({ cn: 'fallback', body: 'hello' });
  });

  it('applies minVersion to every certificate', async () => {
    await using srv = await serve(new SniSelector(entries(), { minVersion: 'TLSv1.3' }));
    for (const servername of ['api.example.com', 'fallback.test']) {
      const old = await connect(srv.port, { servername, maxVersion: 'TLSv1.2' });
      expect(old.body).toBe('');
      expect(old.error).toMatch(/ERR_SSL|ECONNRESET/);
      expect(await connect(srv.port, { servername, minVersion: 'TLSv1.3' })).toMatchObject({ body: 'hello' });
    }
  });

  it('verifies client certificates against the clientAuth CA, whichever certificate SNI chose', async () => {
    const options: SniContextOptions = { ca: ca.certPem };
    await using srv = await serve(new SniSelector(entries(), options), { requestCert: true, rejectUnauthorized: true });
    for (const servername of ['api.example.com', 'shop.example.com', undefined]) {
      const sni = servername === undefined ? {} : { servername };
      expect(await connect(srv.port, { ...sni, cert: client.certPem, key: client.keyPem })).toMatchObject({ body: 'hello' });
      expect(await connect(srv.port, { ...sni, cert: stranger.certPem, key: stranger.keyPem })).toMatchObject({ body: '' });
      expect(await connect(srv.port, sni)).toMatchObject({ body: '' });
    }
  });
});
