/**
 * Certificate files: read a certificate and its key, check that they parse and belong together,
 * and keep what the rest of Gatehouse needs as plain data (it crosses to the shard threads by
 * `postMessage`). Everything here is synchronous: it runs at config check, at start and when a
 * watched file changes, never per connection.
 */
import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GatehouseError } from '../errors.ts';

/** Why a TLS file was refused. */
export type TlsFileReason = 'tls_file_missing' | 'tls_file_unreadable' | 'tls_cert_invalid' | 'tls_key_invalid' | 'tls_key_mismatch';

/** Which file of a listener's TLS settings: a certificate (`cert`), its key, or a CA bundle (`ca`). */
export type TlsFileRole = 'cert' | 'key' | 'ca';

/**
 * A certificate, key or CA file cannot be used. `reason` says why, `which` and `file` say which
 * file; the message names the file and is meant for the operator
 * (`/etc/gh/key.pem does not match the certificate in /etc/gh/cert.pem`).
 *
 * @example
 * try { loadPair(cert, key); } catch (err) {
 *   if (err instanceof TlsFileError && err.reason === 'tls_key_mismatch') { ... }
 * }
 */
export class TlsFileError extends GatehouseError {
  readonly code = 'GH_ERR_TLS_FILE';
  readonly reason: TlsFileReason;
  readonly which: TlsFileRole;
  readonly file: string;
  constructor(reason: TlsFileReason, which: TlsFileRole, file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TlsFileError';
    this.reason = reason;
    this.which = which;
    this.file = file;
  }

  override toJSON(): { code: string; message: string; reason: TlsFileReason; which: TlsFileRole; file: string } {
    return { code: this.code, message: this.message, reason: this.reason, which: this.which, file: this.file };
  }
}

/**
 * A certificate and its key, checked. Plain data: structured-clone-able, so it can be posted to
 * a worker thread as is.
 */
export interface CertificatePair {
  certFile: string;
  keyFile: string;
  /** The certificate file as read: the leaf first, then its chain, as given. */
  certPem: string;
  keyPem: string;
  /** The leaf's subject, one `KEY=value` per line (`CN=a.example.com`). */
  subject: string;
  issuer: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  /** The leaf's subjectAltName DNS entries, as written (wildcards included). */
  dnsNames: string[];
  /** SHA-256 fingerprint of the leaf, `AB:CD:...`. */
  fingerprint256: string;
  /** SHA-256 of the certificate and key files' bytes: a file rewritten with the same content has the same hash. */
  contentHash: string;
}

/** A CA bundle (listener `clientAuth.ca`, upstream `ca`), checked. */
export interface CaBundle {
  file: string;
  pem: string;
  /** One per certificate in the file. */
  subjects: string[];
  contentHash: string;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads a file, turning the OS errors an operator can meet into a {@link TlsFileError}. */
export function readTlsFile(file: string, which: TlsFileRole): Buffer {
  const what = which === 'ca' ? 'CA file' : which === 'cert' ? 'certificate file' : 'key file';
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return fail('tls_file_missing', which, file, `${what} ${file} does not exist`, err);
    const why = code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (err as Error).message;
    return fail('tls_file_unreadable', which, file, `${what} ${file} cannot be read: ${why}`, err);
  }
}

function fail(reason: TlsFileReason, which: TlsFileRole, file: string, message: string, cause?: unknown): never {
  throw new TlsFileError(reason, which, file, message, cause === undefined ? undefined : { cause });
}

/** Every PEM certificate block of `text`, parsed; throws `tls_cert_invalid` when there is none or one does not parse. */
function parseCertificates(text: string, which: 'cert' | 'ca', file: string): X509Certificate[] {
  const blocks = text.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) {
    const hint = /PRIVATE KEY-----/.test(text) ? ' (it holds a private key: are cert and key swapped?)' : '';
    fail('tls_cert_invalid', which, file, `${file} holds no PEM certificate${hint}`);
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      return fail('tls_cert_invalid', which, file, `${file}: certificate ${i + 1} cannot be parsed: ${(err as Error).message}`, err);
    }
  });
}

function parseKey(text: string, file: string): KeyObject {
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(text)) {
    fail('tls_key_invalid', 'key', file, `key file ${file} is encrypted: passphrase-protected keys are not supported (openssl pkey -in KEY -out KEY.plain)`);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    const hint = /-----BEGIN CERTIFICATE-----/.test(text) ? ' (it holds a certificate: are cert and key swapped?)' : '';
    fail('tls_key_invalid', 'key', file, `key file ${file} holds no PEM private key${hint}`);
  }
  try {
    return createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    return fail('tls_key_invalid', 'key', file, `key file ${file} cannot be parsed: ${(err as Error).message}`, err);
  }
}

/** The DNS entries of a subjectAltName string as Node prints it (`DNS:a.example.com, IP Address:1.2.3.4`; an odd entry is JSON-quoted). */
export function sanDnsNames(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const out: string[] = [];
  const entry = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (let m = entry.exec(subjectAltName); m !== null; m = entry.exec(subjectAltName)) {
    if (m[1] !== 'DNS') continue;
    let v = m[2]!;
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        continue;
      }
    }
    out.push(v);
  }
  return out;
}

/** SHA-256 over files' bytes, as {@link CertificatePair.contentHash} and {@link CaBundle.contentHash} are computed. */
export function contentHash(...parts: Buffer[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

/**
 * Checks a certificate and key from their bytes (already read); see {@link loadPair}.
 */
export function pairFromContent(certFile: string, keyFile: string, certBytes: Buffer, keyBytes: Buffer): CertificatePair {
  const certPem = certBytes.toString('utf8');
  const keyPem = keyBytes.toString('utf8');
  const leaf = parseCertificates(certPem, 'cert', certFile)[0]!;
  const key = parseKey(keyPem, keyFile);
  if (!leaf.checkPrivateKey(key)) fail('tls_key_mismatch', 'key', keyFile, `${keyFile} does not match the certificate in ${certFile}`);
  return {
    certFile,
    keyFile,
    certPem,
    keyPem,
    subject: leaf.subject,
    issuer: leaf.issuer,
    serialNumber: leaf.serialNumber,
    notBefore: leaf.validFromDate,
    notAfter: leaf.validToDate,
    dnsNames: sanDnsNames(leaf.subjectAltName),
    fingerprint256: leaf.fingerprint256,
    contentHash: contentHash(certBytes, keyBytes),
  };
}

/**
 * Reads and checks a certificate and its private key: the certificate file's first PEM block is
 * the leaf (the blocks after it are its chain, served as given), the key is PEM (PKCS#1, PKCS#8
 * or SEC1, not encrypted), and the key must be the leaf's. Throws a {@link TlsFileError}
 * (`tls_file_missing`, `tls_file_unreadable`, `tls_cert_invalid`, `tls_key_invalid`,
 * `tls_key_mismatch`) otherwise. An expired certificate is loaded: expiry is a warning
 * (see `expiry` in watch.ts), not a reason to stop serving.
 *
 * @example
 * const pair = loadPair('/etc/gh/cert.pem', '/etc/gh/key.pem');
 * tls.createSecureContext({ cert: pair.certPem, key: pair.keyPem });
 */
export function loadPair(certFile: string, keyFile: string): CertificatePair {
  const certBytes = readTlsFile(certFile, 'cert');
  const keyBytes = readTlsFile(keyFile, 'key');
  return pairFromContent(certFile, keyFile, certBytes, keyBytes);
}

/** Checks a CA bundle from its bytes (already read); see {@link checkCaFile}. */
export function caFromContent(file: string, bytes: Buffer): CaBundle {
  const pem = bytes.toString('utf8');
  const certs = parseCertificates(pem, 'ca', file);
  return { file, pem, subjects: certs.map((c) => c.subject), contentHash: contentHash(bytes) };
}

/**
 * Reads and checks a CA bundle (listener `clientAuth.ca`, upstream `ca`): readable, with at
 * least one PEM certificate, each of which parses. Throws a {@link TlsFileError} with
 * `which: 'ca'` otherwise.
 *
 * @example
 * const ca = checkCaFile('/etc/gh/clients-ca.pem');
 * tls.createSecureContext({ ca: ca.pem, ... });
 */
export function checkCaFile(file: string): CaBundle {
  return caFromContent(file, readTlsFile(file, 'ca'));
}
