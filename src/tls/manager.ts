/**
 * The main thread's side of TLS termination: it reads every TLS listener's certificate files
 * (the shards never touch the files), watches them, and hands each shard the material as part
 * of its config ({@link TlsManager.shardTls}). A renewed pair that checks out is pushed to the
 * shards (`onUpdate`), which use it for new handshakes; a bad one is logged, counted
 * (`gatehouse_tls_reload_errors_total`) and the old pair kept. It also owns the session-ticket
 * keys shared by every shard, rotated every {@link TICKET_ROTATE_MS}, and logs a warning for a
 * certificate that expires within 14 days (at load, then daily). The files of upstream `tls` are
 * read and watched the same way (upstream-files.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { GatehouseConfig, ListenerConfig, ListenerTlsConfig } from '../config/types.ts';
import type { CaBundle, CertificatePair, TlsFileError } from './certificates.ts';
import type { ShardTls } from './listener-tls.ts';
import type { ShardUpstreamTls } from './upstream-tls.ts';
import { UpstreamTlsFiles } from './upstream-files.ts';
import { CertificateWatcher, expiry } from './watch.ts';

/** Session-ticket keys are replaced this often (tickets issued before stop resuming then). */
export const TICKET_ROTATE_MS = 12 * 60 * 60 * 1000;
const EXPIRY_CHECK_MS = 24 * 60 * 60 * 1000;

interface Entry {
  config: ListenerTlsConfig;
  protocol: ListenerConfig['protocol'];
  watcher: CertificateWatcher;
  pairs: CertificatePair[];
  ca: CaBundle | undefined;
  shard: ShardTls;
}

/** What the metrics read. */
export interface TlsManagerStats {
  /** listener → renewed files that failed their check. */
  reloadErrors: Map<string, number>;
  /** upstream → renewed upstream `tls` files that failed their check. */
  upstreamReloadErrors: Map<string, number>;
  /** listener → certificate name (its first server name, or its subject) → notAfter (s since epoch). */
  expiry: Map<string, Map<string, number>>;
}

/**
 * @example
 * const tls = new TlsManager(log, () => shards.pushConfig());
 * tls.apply(config);                  // throws a TlsFileError (with .listener/.path) on a bad file
 * toShardConfig(cfg, { ..., listenerTls: (n) => tls.shardTls(n) });
 * tls.close();
 */
export class TlsManager {
  readonly #log: Logger;
  readonly #onUpdate: () => void;
  readonly #entries = new Map<string, Entry>();
  readonly stats: TlsManagerStats = { reloadErrors: new Map(), upstreamReloadErrors: new Map(), expiry: new Map() };
  /** Upstream `tls` files: read at start and at each reload, watched in between. */
  readonly #upstreams: UpstreamTlsFiles;
  #ticketKeys = randomBytes(48);
  #rotate: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;

  constructor(log: Logger, onUpdate: () => void) {
    this.#log = log.child({ actorType: 'tls' });
    this.#onUpdate = onUpdate;
    this.#upstreams = new UpstreamTlsFiles(this.#log, onUpdate, this.stats.upstreamReloadErrors);
  }

  /**
   * Loads the certificates of every TLS listener of `cfg` and the files of every upstream `tls`,
   * and watches them; listeners and upstreams no longer configured (or without `tls`) stop being
   * watched. Throws a {@link TlsFileError} carrying `path` (the config key path; `listener` too
   * for a listener's) for the first bad file, leaving the running state as it was.
   */
  apply(cfg: GatehouseConfig): void {
    const next = new Map<string, Entry>();
    try {
      for (const l of cfg.listeners) {
        if (!l.tls) continue;
        next.set(l.name, this.#load(l.name, l.protocol, l.tls, cfg.listeners.indexOf(l)));
      }
      // Commits only when every upstream file loads; the listeners commit after it.
      this.#upstreams.apply(cfg);
    } catch (err) {
      for (const e of next.values()) e.watcher.close();
      throw err;
    }
    for (const e of this.#entries.values()) e.watcher.close();
    this.#entries.clear();
    for (const [k, v] of next) this.#entries.set(k, v);
    this.stats.expiry.clear();
    for (const [name, e] of this.#entries) this.#recordExpiry(name, e);
    this.#warnExpiring();
    if (this.#entries.size > 0) this.#arm();
    else this.#disarm();
  }

  /** The TLS settings of upstream `name` for the shards (the files' contents in use), or undefined (no `tls`). */
  upstreamTls(name: string): ShardUpstreamTls | undefined {
    return this.#upstreams.get(name);
  }

  /** The material of listener `name` for its shards, or undefined (no `tls`). */
  shardTls(name: string): ShardTls | undefined {
    return this.#entries.get(name)?.shard;
  }

  close(): void {
    for (const e of this.#entries.values()) e.watcher.close();
    this.#entries.clear();
    this.#upstreams.close();
    this.#disarm();
  }

  #load(name: string, protocol: ListenerConfig['protocol'], config: ListenerTlsConfig, index: number): Entry {
    const watcher = new CertificateWatcher({
      certificates: config.certificates.map((c) => ({ cert: c.cert, key: c.key })),
      ca: config.clientAuth?.ca,
      onChange: (pairs, ca) => this.#changed(name, pairs, ca),
      onError: (err, slot) => this.#failed(name, err, slot),
      onInternalError: (err) => this.#log.warn({ err, listener: name }, 'certificate watcher problem (the periodic check goes on)'),
    });
    let loaded: { pairs: CertificatePair[]; ca: CaBundle | undefined };
    try {
      loaded = watcher.start();
    } catch (err) {
      watcher.close();
      const e = err as TlsFileError & { listener?: string; path?: string };
      e.listener = name;
      const j = e.which === 'ca' ? -1 : config.certificates.findIndex((c) => c.cert === e.file || c.key === e.file);
      e.path = e.which === 'ca' ? `listeners.${index}.tls.clientAuth.ca` : `listeners.${index}.tls.certificates.${Math.max(0, j)}.${e.which}`;
      throw e;
    }
    const entry: Entry = { config, protocol, watcher, pairs: loaded.pairs, ca: loaded.ca, shard: undefined as unknown as ShardTls };
    entry.shard = this.#shardTls(entry);
    return entry;
  }

  #shardTls(e: Entry): ShardTls {
    const c = e.config;
    return {
      certificates: e.pairs.map((pair, i) => ({ pair, serverNames: c.certificates[i]!.serverNames })),
      minVersion: c.minVersion,
      // HTTP and hub listeners speak HTTP/1.1 (no h2): say so, so that a client offering h2 and
      // http/1.1 picks the one that works.
      alpn: c.alpn.length > 0 ? c.alpn : e.protocol === 'tcp' ? [] : ['http/1.1'],
      ...(c.clientAuth && e.ca && { clientAuth: { caPem: e.ca.pem, required: c.clientAuth.required } }),
      handshakeTimeoutMs: c.handshakeTimeout,
      ticketKeys: new Uint8Array(this.#ticketKeys),
    };
  }

  #changed(name: string, pairs: CertificatePair[], ca: CaBundle | undefined): void {
    const e = this.#entries.get(name);
    if (!e) return;
    e.pairs = pairs;
    e.ca = ca;
    e.shard = this.#shardTls(e);
    this.#recordExpiry(name, e);
    this.#log.info({ listener: name, certificates: pairs.map((p) => ({ subject: p.subject, notAfter: p.notAfter })) }, 'certificates reloaded: new handshakes use them');
    this.#onUpdate();
  }

  #failed(name: string, err: TlsFileError, slot: number | 'ca'): void {
    this.stats.reloadErrors.set(name, (this.stats.reloadErrors.get(name) ?? 0) + 1);
    this.#log.error({ listener: name, err, certificate: slot }, 'certificate file changed but failed its check: the previous one stays in use');
  }

  #recordExpiry(name: string, e: Entry): void {
    const m = new Map<string, number>();
    e.pairs.forEach((p, i) => m.set(certName(p, e.config.certificates[i]!.serverNames, i), Math.floor(new Date(p.notAfter).getTime() / 1000)));
    this.stats.expiry.set(name, m);
  }

  #warnExpiring(): void {
    for (const [name, e] of this.#entries) {
      for (const x of expiry(e.pairs, Date.now())) {
        this.#log.warn({ listener: name, subject: x.pair.subject, notAfter: x.pair.notAfter, daysLeft: Math.floor(x.msLeft / 86_400_000) }, 'certificate expires within 14 days');
      }
    }
  }

  #arm(): void {
    this.#rotate ??= setInterval(() => {
      this.#ticketKeys = randomBytes(48);
      for (const e of this.#entries.values()) e.shard = this.#shardTls(e);
      this.#onUpdate();
    }, TICKET_ROTATE_MS).unref();
    this.#expiryTimer ??= setInterval(() => this.#warnExpiring(), EXPIRY_CHECK_MS).unref();
  }

  #disarm(): void {
    clearInterval(this.#rotate);
    clearInterval(this.#expiryTimer);
    this.#rotate = undefined;
    this.#expiryTimer = undefined;
  }
}

/** A certificate's name in metrics: its first configured server name, else its first DNS name, else its index. */
function certName(p: CertificatePair, serverNames: string[], i: number): string {
  return serverNames[0] ?? p.dnsNames[0] ?? `certificate-${i}`;
}
