/**
 * Test certificates made with the `openssl` command line (OpenSSL 3) into a temp directory: a CA,
 * server leaves signed by it or self-signed, client certificates for mutual TLS. Keys are EC
 * P-256, so making one takes a few milliseconds.
 *
 * @example
 * using certs = testCerts();
 * const ca = await certs.ca();
 * const web = await certs.leaf('web', { ca, dns: ['a.example.com'] });
 * tls.connect({ port, servername: 'a.example.com', ca: ca.certPem });
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './daemon.ts';

const run = promisify(execFile);
const OPENSSL = '/usr/bin/openssl';
const NEW_KEY = { ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc'], rsa: ['-newkey', 'rsa:2048', '-noenc'] };

/** A certificate and its key, on disk and in memory (PEM). */
export interface TestCert {
  name: string;
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

/** What a certificate says and how long it is valid. */
export interface TestCertOptions {
  /** Subject CN; default: the name. */
  cn?: string;
  /** subjectAltName DNS entries (wildcards allowed: `*.example.com`). */
  dns?: string[];
  /** subjectAltName IP entries. */
  ips?: string[];
  /** Valid from now for this many days (default 30). Ignored when `validity` is given. */
  days?: number;
  /** An explicit validity period (may be in the past, or a few minutes long). */
  validity?: { notBefore: Date; notAfter: Date };
  /** The issuer; self-signed when absent. */
  ca?: TestCert;
  /** Default `ec` (P-256, fast); `rsa` is 2048 bits. */
  keyType?: 'ec' | 'rsa';
}

/** A temp directory of generated certificates; `dispose` removes it. */
export interface TestCerts extends Disposable {
  readonly dir: string;
  /** A self-signed CA certificate (`basicConstraints CA:TRUE`), in `NAME.crt`/`NAME.key`. */
  ca(name?: string, opts?: Omit<TestCertOptions, 'ca' | 'dns' | 'ips'>): Promise<TestCert>;
  /** A server certificate (`serverAuth`), signed by `opts.ca` or self-signed. */
  leaf(name: string, opts?: TestCertOptions): Promise<TestCert>;
  /** A client certificate (`clientAuth`) signed by `ca`, for mutual TLS. */
  client(name: string, ca: TestCert, opts?: Omit<TestCertOptions, 'ca'>): Promise<TestCert>;
  /** A fresh key alone (for a key that does not match a certificate), in `NAME.key`. */
  key(name: string): Promise<{ keyFile: string; keyPem: string }>;
  /** Writes a file in the directory (made as needed) and returns its path. */
  write(name: string, text: string): string;
}

type Kind = 'ca' | 'server' | 'client';

const EXTENSIONS: Record<Kind, string[]> = {
  ca: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'],
  server: ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth'],
  client: ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'],
};

/** `YYYYMMDDHHMMSSZ`, as `openssl ca -startdate/-enddate` takes it. */
function asn1Time(d: Date): string {
  return `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

/** A minimal `openssl ca` set-up in its own directory (each call has its own database). */
function caConfig(workDir: string): string {
  mkdirSync(workDir, { recursive: true });
  writeFileSync(path.join(workDir, 'index.txt'), '');
  const cnf = path.join(workDir, 'ca.cnf');
  writeFileSync(
    cnf,
    [
      '[ ca ]',
      'default_ca = d',
      '[ d ]',
      `database = ${path.join(workDir, 'index.txt')}`,
      `new_certs_dir = ${workDir}`,
      `serial = ${path.join(workDir, 'serial')}`,
      'default_md = sha256',
      'policy = p',
      'copy_extensions = copy',
      'unique_subject = no',
      '[ p ]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  return cnf;
}

/**
 * A temp directory to make certificates in, removed on dispose (`using certs = testCerts()`).
 */
export function testCerts(): TestCerts {
  const tmp = tempDir();
  const { dir } = tmp;
  let seq = 0;

  async function make(name: string, kind: Kind, opts: TestCertOptions): Promise<TestCert> {
    const certFile = path.join(dir, `${name}.crt`);
    const keyFile = path.join(dir, `${name}.key`);
    mkdirSync(path.dirname(certFile), { recursive: true });
    const cn = opts.cn ?? path.basename(name);
    const san = [...(opts.dns ?? []).map((d) => `DNS:${d}`), ...(opts.ips ?? []).map((ip) => `IP:${ip}`)];
    const ext = [...EXTENSIONS[kind], ...(san.length > 0 ? [`subjectAltName=${san.join(',')}`] : [])].flatMap((e) => ['-addext', e]);
    const subj = ['-subj', `/CN=${cn}`];
    const newKey = NEW_KEY[opts.keyType ?? 'ec'];
    if (opts.validity === undefined) {
      const signer = opts.ca ? ['-CA', opts.ca.certFile, '-CAkey', opts.ca.keyFile] : [];
      await run(OPENSSL, ['req', '-x509', ...newKey, '-keyout', keyFile, '-out', certFile, ...subj, ...signer, '-days', String(opts.days ?? 30), ...ext]);
    } else {
      // `req -x509` only takes whole days from now; `openssl ca` takes explicit dates.
      const work = path.join(dir, '.ca', String(seq++));
      const cnf = caConfig(work);
      const csr = path.join(work, 'req.csr');
      await run(OPENSSL, ['req', '-new', ...newKey, '-keyout', keyFile, '-out', csr, ...subj, ...ext]);
      const signer = opts.ca ? ['-cert', opts.ca.certFile, '-keyfile', opts.ca.keyFile] : ['-selfsign', '-keyfile', keyFile];
      const dates = ['-startdate', asn1Time(opts.validity.notBefore), '-enddate', asn1Time(opts.validity.notAfter)];
      await run(OPENSSL, ['ca', '-config', cnf, '-batch', '-notext', '-rand_serial', ...signer, '-in', csr, '-out', certFile, ...dates]);
    }
    return { name, certFile, keyFile, certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') };
  }

  return {
    dir,
    ca: (name = 'ca', opts = {}) => make(name, 'ca', opts),
    leaf: (name, opts = {}) => make(name, 'server', opts),
    client: (name, ca, opts = {}) => make(name, 'client', { ...opts, ca }),
    key: async (name) => {
      const keyFile = path.join(dir, `${name}.key`);
      mkdirSync(path.dirname(keyFile), { recursive: true });
      await run(OPENSSL, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile]);
      return { keyFile, keyPem: readFileSync(keyFile, 'utf8') };
    },
    write: (name, text) => {
      const f = path.join(dir, name);
      mkdirSync(path.dirname(f), { recursive: true });
      writeFileSync(f, text);
      return f;
    },
    [Symbol.dispose]: () => tmp[Symbol.dispose](),
  };
}
