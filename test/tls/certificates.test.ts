import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatehouseError } from '../../src/errors.ts';
import { checkCaFile, loadPair, sanDnsNames, TlsFileError, type TlsFileReason } from '../../src/tls/certificates.ts';
import { testCerts, type TestCert } from '../helpers/tls-certs.ts';

const certs = testCerts();
let ca: TestCert;
let web: TestCert;
let other: TestCert;

beforeAll(async () => {
  ca = await certs.ca('ca', { cn: 'Test CA' });
  [web, other] = await Promise.all([
    certs.leaf('web', { ca, cn: 'web.example.com', dns: ['web.example.com', '*.api.example.com'], ips: ['127.0.0.1'], days: 10 }),
    certs.leaf('other', { cn: 'other.test' }),
  ]);
});
afterAll(() => certs[Symbol.dispose]());

/** The TlsFileError `fn` throws. */
function refusal(fn: () => unknown): TlsFileError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TlsFileError);
    return err as TlsFileError;
  }
  throw new Error('expected a TlsFileError, nothing was thrown');
}

function expectRefused(fn: () => unknown, reason: TlsFileReason, which: 'cert' | 'key' | 'ca', file: string): TlsFileError {
  const err = refusal(fn);
  expect({ reason: err.reason, which: err.which, file: err.file }).toEqual({ reason, which, file });
  expect(err.message).toContain(file);
  return err;
}

describe('loadPair', () => {
  it('reads a certificate signed by a CA and what the rest of Gatehouse needs from it', () => {
    const pair = loadPair(web.certFile, web.keyFile);
    const x = new X509Certificate(web.certPem);
    expect(pair).toMatchObject({
      certFile: web.certFile,
      keyFile: web.keyFile,
      certPem: web.certPem,
      keyPem: web.keyPem,
      subject: 'CN=web.example.com',
      issuer: 'CN=Test CA',
      serialNumber: x.serialNumber,
      fingerprint256: x.fingerprint256,
      dnsNames: ['web.example.com', '*.api.example.com'],
    });
    const days = (pair.notAfter.getTime() - pair.notBefore.getTime()) / 86_400_000;
    expect(Math.round(days)).toBe(10);
    expect(pair.notBefore.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('is plain data: a structured clone (a postMessage to a shard) is equal', () => {
    const pair = loadPair(web.certFile, web.keyFile);
    const clone = structuredClone(pair);
    expect(clone).toEqual(pair);
    expect(clone.notAfter).toBeInstanceOf(Date);
  });

  it('keeps the chain after the leaf as given, and reads the leaf from the first block', () => {
    const chained = certs.write('chain/fullchain.pem', web.certPem + ca.certPem);
    const pair = loadPair(chained, web.keyFile);
    expect(pair.certPem).toBe(web.certPem + ca.certPem);
    expect(pair.subject).toBe('CN=web.example.com');
  });

  it('takes PKCS#8, SEC1 and PKCS#1 keys', async () => {
    const sec1 = certs.write('keys/sec1.key', createPrivateKey(web.keyPem).export({ type: 'sec1', format: 'pem' }) as string);
    expect(loadPair(web.certFile, sec1).subject).toBe('CN=web.example.com');
    const rsa = await certs.leaf('rsa', { keyType: 'rsa' });
    const pkcs1 = certs.write('keys/pkcs1.key', createPrivateKey(rsa.keyPem).export({ type: 'pkcs1', format: 'pem' }) as string);
    expect(pkcs1).not.toBe(rsa.keyFile);
    expect(loadPair(rsa.certFile, pkcs1).subject).toBe('CN=rsa');
    expect(loadPair(rsa.certFile, rsa.keyFile).keyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('refuses a key that is not the certificate\'s, naming both files', () => {
    const err = expectRefused(() => loadPair(web.certFile, other.keyFile), 'tls_key_mismatch', 'key', other.keyFile);
    expect(err.message).toBe(`${other.keyFile} does not match the certificate in ${web.certFile}`);
    expect(err).toBeInstanceOf(GatehouseError);
    expect(err.code).toBe('GH_ERR_TLS_FILE');
    expect(JSON.parse(JSON.stringify(err))).toEqual({ code: 'GH_ERR_TLS_FILE', reason: 'tls_key_mismatch', which: 'key', file: other.keyFile, message: err.message });
  });

  it('refuses a certificate file that holds garbage or a broken PEM block', () => {
    const garbage = certs.write('bad/garbage.crt', 'this is not a certificate\n');
    expectRefused(() => loadPair(garbage, web.keyFile), 'tls_cert_invalid', 'cert', garbage);
    const empty = certs.write('bad/empty.crt', '');
    expectRefused(() => loadPair(empty, web.keyFile), 'tls_cert_invalid', 'cert', empty);
    const broken = certs.write('bad/broken.crt', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const err = expectRefused(() => loadPair(broken, web.keyFile), 'tls_cert_invalid', 'cert', broken);
    expect(err.message).toContain('cannot be parsed');
  });

  it('says so when certificate and key are swapped', () => {
    const err = expectRefused(() => loadPair(web.keyFile, web.certFile), 'tls_cert_invalid', 'cert', web.keyFile);
    expect(err.message).toContain('are cert and key swapped?');
    const keyErr = expectRefused(() => loadPair(web.certFile, web.certFile), 'tls_key_invalid', 'key', web.certFile);
    expect(keyErr.message).toContain('are cert and key swapped?');
  });

  it('refuses a key that is garbage, or encrypted', () => {
    const garbage = certs.write('bad/garbage.key', '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n');
    expectRefused(() => loadPair(web.certFile, garbage), 'tls_key_invalid', 'key', garbage);
    const encrypted = certs.write(
      'bad/encrypted.key',
      createPrivateKey(web.keyPem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' }) as string,
    );
    const err = expectRefused(() => loadPair(web.certFile, encrypted), 'tls_key_invalid', 'key', encrypted);
    expect(err.message).toContain('encrypted');
  });

  it('refuses a missing certificate or key, saying which', () => {
    const nope = path.join(certs.dir, 'missing.crt');
    expect(expectRefused(() => loadPair(nope, web.keyFile), 'tls_file_missing', 'cert', nope).message).toBe(`certificate file ${nope} does not exist`);
    const nokey = path.join(certs.dir, 'no-dir', 'missing.key');
    expectRefused(() => loadPair(web.certFile, nokey), 'tls_file_missing', 'key', nokey);
  });

  it('refuses a directory as a file', () => {
    const dir = path.join(certs.dir, 'a-directory.pem');
    mkdirSync(dir);
    const err = expectRefused(() => loadPair(web.certFile, dir), 'tls_file_unreadable', 'key', dir);
    expect(err.message).toBe(`key file ${dir} cannot be read: it is a directory`);
  });

  it.skipIf(process.getuid?.() === 0)('refuses a file it may not read', () => {
    const locked = certs.write('locked/tls.key', web.keyPem);
    chmodSync(locked, 0o000);
    const err = expectRefused(() => loadPair(web.certFile, locked), 'tls_file_unreadable', 'key', locked);
    expect(err.message).toContain('permission denied');
  });
});

describe('checkCaFile', () => {
  it('reads a CA bundle of one or more certificates', () => {
    expect(checkCaFile(ca.certFile)).toMatchObject({ file: ca.certFile, pem: ca.certPem, subjects: ['CN=Test CA'] });
    const bundle = certs.write('ca/bundle.pem', `${ca.certPem}\n${other.certPem}`);
    expect(checkCaFile(bundle).subjects).toEqual(['CN=Test CA', 'CN=other.test']);
  });

  it('refuses a missing file, a directory, or a file without a certificate', () => {
    const nope = path.join(certs.dir, 'ca-missing.pem');
    expectRefused(() => checkCaFile(nope), 'tls_file_missing', 'ca', nope);
    expectRefused(() => checkCaFile(certs.dir), 'tls_file_unreadable', 'ca', certs.dir);
    const empty = certs.write('ca/empty.pem', '\n');
    expectRefused(() => checkCaFile(empty), 'tls_cert_invalid', 'ca', empty);
    expectRefused(() => checkCaFile(ca.keyFile), 'tls_cert_invalid', 'ca', ca.keyFile);
  });
});

describe('sanDnsNames', () => {
  it('keeps DNS entries only, and unquotes the ones Node quotes', () => {
    expect(sanDnsNames(undefined)).toEqual([]);
    expect(sanDnsNames('DNS:a.example.com, IP Address:127.0.0.1, DNS:*.b.example.com')).toEqual(['a.example.com', '*.b.example.com']);
    expect(sanDnsNames('URI:spiffe://x, DNS:"odd, name", DNS:c.test')).toEqual(['odd, name', 'c.test']);
  });
});
