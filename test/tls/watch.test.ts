import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPair, TlsFileError, type CaBundle, type CertificatePair } from '../../src/tls/certificates.ts';
import { SniSelector } from '../../src/tls/sni.ts';
import { CertificateWatcher, expiry, type CertificateSlot, type CertificateWatcherOptions } from '../../src/tls/watch.ts';
import { until } from '../helpers/daemon.ts';
import { testCerts, type TestCert } from '../helpers/tls-certs.ts';

const certs = testCerts();
let ca: TestCert;
let ca2: TestCert;
let v1: TestCert;
let v2: TestCert;
let v3: TestCert;
let stray: { keyPem: string };
let seq = 0;

beforeAll(async () => {
  [ca, ca2] = await Promise.all([certs.ca('ca', { cn: 'CA one' }), certs.ca('ca2', { cn: 'CA two' })]);
  [v1, v2, v3, stray] = await Promise.all([
    certs.leaf('made/v1', { ca, cn: 'v1', dns: ['site.test'], ips: ['127.0.0.1'] }),
    certs.leaf('made/v2', { ca, cn: 'v2', dns: ['site.test'], ips: ['127.0.0.1'] }),
    certs.leaf('made/v3', { ca, cn: 'v3', dns: ['site.test'], ips: ['127.0.0.1'] }),
    certs.key('made/stray'),
  ]);
});
afterAll(() => certs[Symbol.dispose]());

/** Writes next to `file` and renames over it, as certbot and most tools do. */
function replace(file: string, text: string): void {
  const tmp = `${file}.tmp-${seq++}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** A fresh directory holding `tls.crt`/`tls.key` (a copy of `pair`) and `ca.crt`. */
function liveDir(pair: TestCert = v1): { dir: string; cert: string; key: string; ca: string } {
  const dir = path.join(certs.dir, `live-${seq++}`);
  mkdirSync(dir);
  const files = { dir, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), ca: path.join(dir, 'ca.crt') };
  writeFileSync(files.cert, pair.certPem);
  writeFileSync(files.key, pair.keyPem);
  writeFileSync(files.ca, ca.certPem);
  return files;
}

/** A started watcher that records what it reports; closed on dispose. */
function watcher(opts: Partial<CertificateWatcherOptions> & Pick<CertificateWatcherOptions, 'certificates'>) {
  const changes: { pairs: CertificatePair[]; ca: CaBundle | undefined }[] = [];
  const errors: { err: TlsFileError; index: CertificateSlot }[] = [];
  const internal: unknown[] = [];
  const w = new CertificateWatcher({
    debounceMs: 50,
    onInternalError: (err) => internal.push(err),
    ...opts,
    onChange: (pairs, caBundle) => {
      changes.push({ pairs, ca: caBundle });
      opts.onChange?.(pairs, caBundle);
    },
    onError: (err, index) => {
      errors.push({ err, index });
      opts.onError?.(err, index);
    },
  });
  const started = w.start();
  return { w, started, changes, errors, internal, [Symbol.dispose]: () => w.close() };
}

const fingerprint = (c: TestCert): string => new X509Certificate(c.certPem).fingerprint256;

describe('CertificateWatcher', () => {
  it('loads every file at start, and refuses to start on a bad one', () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }], ca: live.ca });
    expect(t.started.pairs.map((p) => p.subject)).toEqual(['CN=v1']);
    expect(t.started.ca?.subjects).toEqual(['CN=CA one']);
    expect(t.w.pairs).toEqual(t.started.pairs);

    const bad = liveDir();
    writeFileSync(bad.key, stray.keyPem);
    const w = new CertificateWatcher({ certificates: [{ cert: bad.cert, key: bad.key }] });
    expect(() => w.start()).toThrow(TlsFileError);
    w.close();
  });

  it('reloads a new pair renamed into place, read as one pair', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }] });
    replace(live.cert, v2.certPem);
    replace(live.key, v2.keyPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(t.changes[0]!.pairs.map((p) => p.subject)).toEqual(['CN=v2']);
    expect(t.w.pairs[0]!.fingerprint256).toBe(fingerprint(v2));
    expect(t.errors).toEqual([]);
  });

  it('does not reload a file touched or rewritten with the same bytes', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }] });
    const before = t.w.checks;
    writeFileSync(live.cert, readFileSync(live.cert));
    utimesSync(live.key, new Date(), new Date());
    await until(() => t.w.checks > before, 5_000, 'a check after the events');
    t.w.check();
    expect(t.changes).toEqual([]);
    expect(t.errors).toEqual([]);
  });

  it('keeps serving the old pair when the new key does not match, and reports it once', async () => {
    const live = liveDir();
    let srv: Served | undefined;
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }], onChange: (pairs) => srv!.update(pairs) });
    await using served = await serve(t.started.pairs);
    srv = served;
    replace(live.cert, v2.certPem);
    replace(live.key, stray.keyPem);
    await until(() => t.errors.length > 0, 5_000, 'onError');
    expect(t.errors[0]!.index).toBe(0);
    expect(t.errors[0]!.err).toMatchObject({ reason: 'tls_key_mismatch', which: 'key', file: live.key });
    expect(t.errors[0]!.err.message).toBe(`${live.key} does not match the certificate in ${live.cert}`);
    t.w.check();
    t.w.check();
    expect(t.errors).toHaveLength(1);
    expect(t.changes).toEqual([]);
    expect(t.w.pairs[0]!.fingerprint256).toBe(fingerprint(v1));
    expect(await servedFingerprint(served.port)).toBe(fingerprint(v1));

    // Fixed: the right key arrives, and new handshakes get the new certificate.
    replace(live.key, v2.keyPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(await servedFingerprint(served.port)).toBe(fingerprint(v2));
    expect(await servedFingerprint(served.port, 'site.test')).toBe(fingerprint(v2));
  });

  it('ends with the new pair when the key is written a while after its certificate', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }] });
    writeFileSync(live.cert, v3.certPem);
    // The pause: long enough for a check to see the new certificate with the old key.
    await until(() => t.errors.length > 0, 5_000, 'the half-written pair seen');
    expect(t.errors[0]!.err.reason).toBe('tls_key_mismatch');
    writeFileSync(live.key, v3.keyPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(t.changes.at(-1)!.pairs[0]!.subject).toBe('CN=v3');
    expect(t.errors).toHaveLength(1);
  });

  it('follows a cert-manager style ..data symlink swap', async () => {
    const dir = path.join(certs.dir, `k8s-${seq++}`);
    const version = (name: string, c: TestCert): void => {
      mkdirSync(path.join(dir, name), { recursive: true });
      writeFileSync(path.join(dir, name, 'tls.crt'), c.certPem);
      writeFileSync(path.join(dir, name, 'tls.key'), c.keyPem);
    };
    version('..2026_01_01_00_00_00.1', v1);
    symlinkSync('..2026_01_01_00_00_00.1', path.join(dir, '..data'));
    symlinkSync('..data/tls.crt', path.join(dir, 'tls.crt'));
    symlinkSync('..data/tls.key', path.join(dir, 'tls.key'));
    using t = watcher({ certificates: [{ cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') }] });
    expect(t.started.pairs[0]!.subject).toBe('CN=v1');

    version('..2026_02_01_00_00_00.2', v2);
    symlinkSync('..2026_02_01_00_00_00.2', path.join(dir, '..data_tmp'));
    renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    rmSync(path.join(dir, '..2026_01_01_00_00_00.1'), { recursive: true });
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(t.changes.at(-1)!.pairs[0]!.subject).toBe('CN=v2');
    expect(t.errors).toEqual([]);
  });

  it('reports a deleted key, keeps the pair, and takes the next good one', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }] });
    rmSync(live.key);
    await until(() => t.errors.length > 0, 5_000, 'onError');
    expect(t.errors[0]!.err).toMatchObject({ reason: 'tls_file_missing', which: 'key', file: live.key });
    expect(t.w.pairs[0]!.subject).toBe('CN=v1');
    replace(live.cert, v2.certPem);
    replace(live.key, v2.keyPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(t.w.pairs[0]!.subject).toBe('CN=v2');
  });

  it('watches the client CA file: a new CA is passed on, a bad one reported and the old kept', async () => {
    const live = liveDir();
    const other = liveDir(v2);
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }, { cert: other.cert, key: other.key }], ca: live.ca });
    replace(live.ca, ca2.certPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange');
    expect(t.changes[0]!.ca?.subjects).toEqual(['CN=CA two']);
    expect(t.changes[0]!.pairs.map((p) => p.subject)).toEqual(['CN=v1', 'CN=v2']);

    replace(live.ca, 'not a certificate');
    await until(() => t.errors.length > 0, 5_000, 'onError');
    expect(t.errors[0]!).toMatchObject({ index: 'ca', err: { reason: 'tls_cert_invalid', which: 'ca' } });
    expect(t.w.ca?.subjects).toEqual(['CN=CA two']);
  });

  it('says which certificate of several failed', async () => {
    const a = liveDir();
    const b = liveDir(v2);
    using t = watcher({ certificates: [{ cert: a.cert, key: a.key }, { cert: b.cert, key: b.key }] });
    replace(b.key, stray.keyPem);
    await until(() => t.errors.length > 0, 5_000, 'onError');
    expect(t.errors.map((e) => e.index)).toEqual([1]);
  });

  it('finds a change by its slow poll when no event is acted on', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }], debounceMs: 600_000, pollMs: 50 });
    replace(live.cert, v2.certPem);
    replace(live.key, v2.keyPem);
    await until(() => t.changes.length > 0, 5_000, 'onChange from the poll');
    expect(t.w.pairs[0]!.subject).toBe('CN=v2');
  });

  it('checks during a burst of events that never goes quiet', async () => {
    const live = liveDir();
    using t = watcher({ certificates: [{ cert: live.cert, key: live.key }], debounceMs: 100 });
    const noisy = path.join(live.dir, 'access.log');
    const noise = setInterval(() => writeFileSync(noisy, String(Date.now()), { flag: 'a' }), 2);
    try {
      replace(live.cert, v2.certPem);
      replace(live.key, v2.keyPem);
      await until(() => t.changes.length > 0, 5_000, 'onChange while the directory is busy');
    } finally {
      clearInterval(noise);
    }
    expect(t.w.pairs[0]!.subject).toBe('CN=v2');
  });

  it('survives a callback that throws', async () => {
    const live = liveDir();
    let calls = 0;
    using t = watcher({
      certificates: [{ cert: live.cert, key: live.key }],
      onChange: () => {
        calls++;
        throw new Error('listener gone');
      },
    });
    replace(live.cert, v2.certPem);
    replace(live.key, v2.keyPem);
    await until(() => t.internal.length > 0, 5_000, 'the callback error reported');
    expect((t.internal[0] as Error).message).toBe('listener gone');
    replace(live.cert, v3.certPem);
    replace(live.key, v3.keyPem);
    await until(() => calls === 2, 5_000, 'the next change delivered');
    expect(t.w.pairs[0]!.subject).toBe('CN=v3');
  });

  it('reports nothing once closed, and closes twice', () => {
    const live = liveDir();
    const t = watcher({ certificates: [{ cert: live.cert, key: live.key }] });
    t.w.close();
    t.w.close();
    writeFileSync(live.cert, v2.certPem);
    t.w.check();
    expect(t.changes).toEqual([]);
    expect(() => t.w.start()).toThrow(/closed/);
  });
});

describe('expiry', () => {
  const day = 86_400_000;
  it('lists certificates expiring within 14 days, or expired, soonest first', async () => {
    const now = Date.now();
    const [soon, later, gone] = await Promise.all([
      certs.leaf('exp/soon', { days: 10 }),
      certs.leaf('exp/later', { days: 30 }),
      certs.leaf('exp/gone', { validity: { notBefore: new Date(now - 10 * day), notAfter: new Date(now - day) } }),
    ]);
    const pairs = [later, soon, gone].map((c) => loadPair(c.certFile, c.keyFile));
    expect(expiry(pairs, now).map((e) => [e.index, e.expired, Math.round(e.msLeft / day)])).toEqual([
      [2, true, -1],
      [1, false, 10],
    ]);
    expect(expiry(pairs, new Date(now + 20 * day)).map((e) => e.index)).toEqual([2, 1, 0]);
    expect(expiry(pairs, now - 30 * day)).toEqual([]);
    expect(expiry(pairs, now, 40 * day).map((e) => e.index)).toEqual([2, 1, 0]);
  });
});

interface Served extends AsyncDisposable {
  port: number;
  /** New certificates for new handshakes, as a shard applies them. */
  update(pairs: CertificatePair[]): void;
}

/** A TLS server on 127.0.0.1 that picks its certificate by SNI from `pairs`. */
async function serve(pairs: CertificatePair[]): Promise<Served> {
  const build = (ps: CertificatePair[]): SniSelector => new SniSelector(ps.map((pair) => ({ pair, serverNames: [] })));
  let sel = build(pairs);
  const server = tls.createServer({ ...sel.defaultOptions, SNICallback: (n, cb) => sel.sniCallback(n, cb) }, (s) => s.end());
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    update: (ps) => {
      sel = build(ps);
      server.setSecureContext(sel.defaultOptions);
    },
    [Symbol.asyncDispose]: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function servedFingerprint(port: number, servername?: string): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, ...(servername ? { servername } : {}) });
  try {
    await once(socket, 'secureConnect', { signal: AbortSignal.timeout(5_000) });
    return socket.getPeerCertificate().fingerprint256;
  } finally {
    socket.destroy();
  }
}
