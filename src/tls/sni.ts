/**
 * Picks a listener's certificate by the name a client asks for in its TLS ClientHello (SNI).
 *
 * Precedence, for a client name normalised (lower case, no trailing dot):
 * 1. an exact server name (`api.example.com`);
 * 2. a wildcard `*.example.com`, which covers exactly one label: `a.example.com`, not
 *    `a.b.example.com` nor `example.com`;
 * 3. otherwise, and when the client sends no name, the first certificate (the default).
 * Within one step, the certificate listed first wins when two list the same name. A
 * certificate's names are its `serverNames`, or its subjectAltName DNS entries when that list
 * is empty.
 */
import type tls from 'node:tls';

/**
 * `node:tls`, loaded on first use: a shard thread whose listeners and upstreams have no TLS
 * never loads it (nor the OpenSSL state it sets up per thread).
 */
const tlsModule = (): typeof tls => process.getBuiltinModule('node:tls');
import type { CertificatePair } from './certificates.ts';

/** One certificate of a listener and the names it serves. */
export interface SniEntry {
  pair: CertificatePair;
  /** Empty: the certificate's own DNS names (subjectAltName). */
  serverNames: string[];
}

/** What shapes every certificate's `tls.SecureContext`, beyond the certificate and key. */
export interface SniContextOptions {
  /** Default `TLSv1.2`. */
  minVersion?: tls.SecureVersion;
  /** CA certificates (PEM) that client certificates are verified against (listener `clientAuth.ca`). */
  ca?: string;
  /** OpenSSL cipher list; default: Node's (`tls.DEFAULT_CIPHERS`). */
  ciphers?: string;
  /** 48 bytes of session ticket keys, the same in every shard so a session resumes on any. */
  ticketKeys?: Buffer;
}

/** One certificate as the admin API shows it. */
export interface SniCertificateInfo {
  index: number;
  /** The subject's CN, else the first server name. */
  name: string;
  subject: string;
  issuer: string;
  notAfter: string;
  serverNames: string[];
  fingerprint256: string;
  certFile: string;
  default: boolean;
}

/** The `SNICallback` signature of `tls.createServer`. */
export type SniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;

/** Lower case, without a trailing dot: the form names are compared in. */
export function normaliseServerName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** The common name in a subject printed as `KEY=value` lines. */
function commonName(subject: string): string | undefined {
  for (const line of subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3);
  return undefined;
}

/**
 * A listener's certificates, one `tls.SecureContext` each, looked up by SNI in one or two map
 * lookups. Built once per certificate set: when a watched file changes, build a new one and let
 * the server's `SNICallback` read the current selector.
 *
 * @example
 * let sni = new SniSelector([{ pair, serverNames: [] }], { minVersion: 'TLSv1.2' });
 * const server = tls.createServer({
 *   ...sni.defaultOptions, // served to clients that send no SNI
 *   SNICallback: (name, cb) => sni.sniCallback(name, cb),
 *   ALPNProtocols: ['http/1.1'],
 * });
 * // after a certificate change:
 * sni = new SniSelector(entries, options);
 * server.setSecureContext(sni.defaultOptions);
 */
export class SniSelector {
  /** The context served when no name matches or none is sent: the first certificate's. */
  readonly default: tls.SecureContext;
  /** The options `default` was made from: for `tls.createServer` and `server.setSecureContext`. */
  readonly defaultOptions: tls.SecureContextOptions;
  /** One per certificate, in the listed order. */
  readonly contexts: readonly tls.SecureContext[];
  readonly #entries: { pair: CertificatePair; names: string[] }[];
  readonly #exact = new Map<string, number>();
  /** Keyed by the suffix after `*.` (`example.com` for `*.example.com`). */
  readonly #wildcard = new Map<string, number>();

  /** Throws when `entries` is empty, or when a pair cannot be made into a context (OpenSSL's error). */
  constructor(entries: readonly SniEntry[], options: SniContextOptions = {}) {
    if (entries.length === 0) throw new RangeError('SniSelector needs at least one certificate');
    this.#entries = entries.map((e, i) => {
      const names = [...new Set((e.serverNames.length > 0 ? e.serverNames : e.pair.dnsNames).map(normaliseServerName))];
      for (const n of names) {
        if (n.startsWith('*.')) {
          if (!this.#wildcard.has(n.slice(2))) this.#wildcard.set(n.slice(2), i);
        } else if (!this.#exact.has(n)) this.#exact.set(n, i);
      }
      return { pair: e.pair, names };
    });
    const contextOptions = (pair: CertificatePair): tls.SecureContextOptions => ({
      cert: pair.certPem,
      key: pair.keyPem,
      minVersion: options.minVersion ?? 'TLSv1.2',
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.ciphers !== undefined ? { ciphers: options.ciphers } : {}),
      ...(options.ticketKeys !== undefined ? { ticketKeys: options.ticketKeys } : {}),
    });
    this.defaultOptions = contextOptions(entries[0]!.pair);
    this.contexts = entries.map((e, i) => tlsModule().createSecureContext(i === 0 ? this.defaultOptions : contextOptions(e.pair)));
    this.default = this.contexts[0]!;
  }

  /**
   * The index of the certificate for `servername` (see the module's precedence); 0 when the
   * name is missing or matches nothing.
   */
  indexFor(servername: string | undefined): number {
    if (!servername) return 0;
    const name = normaliseServerName(servername);
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wild = this.#wildcard.get(name.slice(dot + 1));
      if (wild !== undefined) return wild;
    }
    return 0;
  }

  /** The context for `servername`. */
  select(servername: string | undefined): tls.SecureContext {
    return this.contexts[this.indexFor(servername)]!;
  }

  /** For `tls.createServer({ SNICallback })`; never fails (unknown names get the default). */
  readonly sniCallback: SniCallback = (servername, cb) => {
    cb(null, this.select(servername));
  };

  /** The certificates, their effective server names and expiry, for the admin API. */
  describe(): SniCertificateInfo[] {
    return this.#entries.map(({ pair, names }, index) => ({
      index,
      name: commonName(pair.subject) ?? names[0] ?? pair.certFile,
      subject: pair.subject,
      issuer: pair.issuer,
      notAfter: pair.notAfter.toISOString(),
      serverNames: names,
      fingerprint256: pair.fingerprint256,
      certFile: pair.certFile,
      default: index === 0,
    }));
  }
}
