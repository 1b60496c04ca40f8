/**
 * TLS termination for a listener, in its shard thread. The listener's plain TCP server accepts
 * and admits a connection (limits first: a refused client costs no handshake); the admitted
 * socket is then handed to a `tls.Server` that never listens itself ({@link ListenerTls.wrap}),
 * which runs the handshake: certificate chosen by SNI ({@link SniSelector}), ALPN, client
 * certificates, session tickets with keys shared by every shard (so a session resumes on any
 * shard the kernel picks, and a new ticket after each resumption: see tickets.ts),
 * `handshakeTimeout`. The connection actor gets the TLSSocket once the handshake is done; a
 * failed one is counted and its places given back.
 *
 * New certificates (a renewed file, a reload) replace the selector: handshakes from then on use
 * them; open connections keep theirs.
 */
import type net from 'node:net';
import type tls from 'node:tls';

/**
 * `node:tls`, loaded on first use: a shard thread whose listeners and upstreams have no TLS
 * never loads it (nor the OpenSSL state it sets up per thread).
 */
const tlsModule = (): typeof tls => process.getBuiltinModule('node:tls');
import type { CertificatePair } from './certificates.ts';
import { SniSelector } from './sni.ts';
import { renewTickets, serverContext } from './tickets.ts';

/** What a shard needs to terminate TLS on one listener (structured-clone-able: it crosses threads). */
export interface ShardTls {
  certificates: { pair: CertificatePair; serverNames: string[] }[];
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  /** ALPN protocols offered, in preference order; empty: none negotiated. */
  alpn: string[];
  /** PEM of the CAs client certificates are verified against; `required`: a client without one is refused. */
  clientAuth?: { caPem: string; required: boolean };
  handshakeTimeoutMs: number;
  /** 48 bytes, the same on every shard (session tickets). */
  ticketKeys: Uint8Array;
}

/** Handshake outcomes a listener counts (`gatehouse_tls_handshakes_total{result}`). */
export interface TlsCounts {
  ok: number;
  error: number;
  resumed: number;
}

/** The TLS details of an established connection (for `/actors`). */
export interface TlsInfo {
  protocol: string | null;
  cipher: string;
  servername: string | undefined;
  alpn: string | false | null;
  resumed: boolean;
  /** The verified client certificate's subject (mutual TLS), as `CN=...,O=...`. */
  clientSubject?: string;
}

const kIpKey = Symbol('gatehouse.tlsIpKey');

/**
 * This thread's handshake counts per listener name. Kept by name, not by listener actor: a
 * listener replaced by a reload (TLS turned on again, another address) keeps counting up, as a
 * Prometheus counter must.
 */
export const tlsHandshakeCounts = new Map<string, TlsCounts>();

/** This thread's handshake counts, for the shard's stats reply. */
export function tlsCountsSnapshot(): { listener: string; ok: number; error: number; resumed: number }[] {
  return [...tlsHandshakeCounts].map(([listener, c]) => ({ listener, ...c }));
}
type Admitted = net.Socket & { [kIpKey]?: number };

/**
 * @example
 * const t = new ListenerTls(settings, (s, ipKey) => adopt(s, ipKey), (ipKey, err) => giveBack(ipKey));
 * server.on('connection', (raw) => { const k = admit(raw); if (k !== undefined) t.wrap(raw, k); });
 */
export class ListenerTls {
  readonly counts: TlsCounts;
  #selector: SniSelector;
  #settings: ShardTls;
  readonly #server: tls.Server;

  constructor(
    listener: string,
    settings: ShardTls,
    onSecure: (socket: tls.TLSSocket, ipKey: number) => void,
    onFailed: (ipKey: number, err: Error, remoteAddress: string | undefined) => void,
  ) {
    let counts = tlsHandshakeCounts.get(listener);
    if (!counts) tlsHandshakeCounts.set(listener, (counts = { ok: 0, error: 0, resumed: 0 }));
    this.counts = counts;
    this.#settings = settings;
    this.#selector = selectorFor(settings);
    this.#server = tlsModule().createServer({
      ...contextOptions(settings),
      SNICallback: (name, cb) => this.#selector.sniCallback(name, cb),
      ALPNProtocols: settings.alpn.length > 0 ? settings.alpn : undefined,
      requestCert: settings.clientAuth !== undefined,
      rejectUnauthorized: settings.clientAuth?.required ?? false,
      handshakeTimeout: settings.handshakeTimeoutMs,
      allowHalfOpen: true,
      pauseOnConnect: true,
    });
    renewTickets(serverContext(this.#server), Buffer.from(settings.ticketKeys), true);
    this.#server.on('secureConnection', (s: tls.TLSSocket) => {
      const raw = (s as tls.TLSSocket & { _parent?: Admitted })._parent;
      const key = raw?.[kIpKey] ?? 0;
      this.counts.ok++;
      if (s.isSessionReused()) this.counts.resumed++;
      onSecure(s, key);
    });
    this.#server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      const raw = (s as tls.TLSSocket & { _parent?: Admitted })._parent;
      this.counts.error++;
      const key = raw?.[kIpKey];
      if (raw) raw[kIpKey] = undefined;
      s.destroy();
      if (key !== undefined) onFailed(key, err, raw?.remoteAddress);
    });
  }

  /** Starts the handshake on an admitted socket (`ipKey` as the listener's admit returned it). */
  wrap(socket: net.Socket, ipKey: number): void {
    (socket as Admitted)[kIpKey] = ipKey;
    this.#server.emit('connection', socket);
  }

  /** New certificates or settings (a renewed file, a reload): used by handshakes from now on. */
  update(settings: ShardTls): void {
    const selector = selectorFor(settings);
    this.#server.setSecureContext(contextOptions(settings));
    renewTickets(serverContext(this.#server), Buffer.from(settings.ticketKeys), true);
    this.#selector = selector;
    this.#settings = settings;
  }

  get settings(): ShardTls {
    return this.#settings;
  }

  describe(): Record<string, unknown> {
    return { certificates: this.#selector.describe(), minVersion: this.#settings.minVersion, alpn: this.#settings.alpn, clientAuth: this.#settings.clientAuth ? { required: this.#settings.clientAuth.required } : undefined, handshakes: { ...this.counts } };
  }
}

/** Whether `s` is a TLS socket (a connection accepted on a `tls` listener). */
export function isTls(s: net.Socket | undefined): s is tls.TLSSocket {
  return (s as (net.Socket & { encrypted?: boolean }) | undefined)?.encrypted === true;
}

/** The TLS details of a connection, for `/actors`. */
export function tlsInfo(s: tls.TLSSocket): TlsInfo {
  const info: TlsInfo = {
    protocol: s.getProtocol(),
    cipher: s.getCipher()?.name ?? '',
    servername: (s as tls.TLSSocket & { servername?: string | false }).servername || undefined,
    alpn: s.alpnProtocol,
    resumed: s.isSessionReused(),
  };
  const subject = clientSubject(s);
  if (subject !== undefined) info.clientSubject = subject;
  return info;
}

/** The verified client certificate's subject CN (a hub client's user id without `auth.jwt`), or undefined. */
export function clientCommonName(s: tls.TLSSocket): string | undefined {
  if (!s.authorized) return undefined;
  const cn = s.getPeerCertificate()?.subject?.CN;
  const v = Array.isArray(cn) ? cn[0] : cn;
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** The verified client certificate's subject as `CN=a,O=b`, or undefined (none, or not verified). */
export function clientSubject(s: tls.TLSSocket): string | undefined {
  if (!s.authorized) return undefined;
  const c = s.getPeerCertificate();
  if (!c || !c.subject) return undefined;
  // RFC 4514-like, and safe as an HTTP field value: anything but printable ASCII, and the
  // separators inside a value, are escaped (`\2C`, UTF-8 bytes as `\C3\A9`).
  const esc = (v: string) => v.replace(/[^\x20-\x7e]|[,+=\\]/g, (ch) => [...Buffer.from(ch, 'utf8')].map((b) => `\\${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));
  return Object.entries(c.subject)
    .map(([k, v]) => `${k}=${(Array.isArray(v) ? v : [String(v)]).map(esc).join('+')}`)
    .join(',');
}

/** The certificates' contexts, each answering ticket operations itself (an SNI switch lands on one of them). */
function selectorFor(s: ShardTls): SniSelector {
  const ticketKeys = Buffer.from(s.ticketKeys);
  const selector = new SniSelector(s.certificates, { minVersion: s.minVersion, ca: s.clientAuth?.caPem, ticketKeys });
  for (const c of selector.contexts) renewTickets(c, ticketKeys, false);
  return selector;
}

/** The server's default context: the first certificate (a client that sends no SNI gets it). */
function contextOptions(s: ShardTls): tls.SecureContextOptions {
  const first = s.certificates[0]!.pair;
  return {
    key: first.keyPem,
    cert: first.certPem,
    minVersion: s.minVersion,
    ...(s.clientAuth && { ca: s.clientAuth.caPem }),
    ticketKeys: Buffer.from(s.ticketKeys),
  };
}
