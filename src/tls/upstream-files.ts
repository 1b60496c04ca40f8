/**
 * The files of every upstream `tls` (`ca`, and `cert` with `key` for mutual TLS), read by the main
 * thread at start and at each reload and watched in between, as a listener's certificates are
 * ({@link CertificateWatcher}: parent directories, renames, `..data` symlinks, a 30 s poll). A
 * renewed file that checks out replaces the upstream's material: the shards get it with their
 * config (`onUpdate`), so new backend connections and new HTTP pools use it, and health probes
 * read it at their next probe ({@link currentUpstreamTls}). A file that fails its check is
 * logged, counted (`gatehouse_tls_reload_errors_total{upstream}`) and the previous material kept.
 */
import type { Logger } from 'pino';
import type { GatehouseConfig, UpstreamTlsConfig } from '../config/types.ts';
import type { CaBundle, CertificatePair, TlsFileError } from './certificates.ts';
import type { ShardUpstreamTls } from './upstream-tls.ts';
import { CertificateWatcher } from './watch.ts';

/** The material in use, shared by the config objects of every reload that kept the same `tls`. */
interface Cell {
  material: ShardUpstreamTls;
  /** While loading: the cell before the reload, to take the new material when apply() commits. */
  kept?: Cell;
}

interface Entry {
  config: UpstreamTlsConfig;
  /** Absent when the upstream names no file (Node's bundled roots, no client certificate). */
  watcher: CertificateWatcher | undefined;
  cell: Cell;
}

/**
 * The material in use for each loaded upstream `tls` config object. Health probes look it up at
 * each probe with the config object they were started from (see {@link currentUpstreamTls}); a
 * reload that keeps an upstream's `tls` keeps its probes, so the objects of the configs before
 * it share the new one's cell.
 */
const inUse = new WeakMap<UpstreamTlsConfig, Cell>();

/**
 * The upstream TLS material in use for `config` (an upstream's `tls` as the running config has
 * it), or undefined when no {@link UpstreamTlsFiles} loaded that config object.
 *
 * @example
 * const x = currentUpstreamTls(u.tls!) ?? readNow(u.tls!);
 */
export function currentUpstreamTls(config: UpstreamTlsConfig): ShardUpstreamTls | undefined {
  return inUse.get(config)?.material;
}

/**
 * @example
 * const files = new UpstreamTlsFiles(log, () => shards.pushConfig(), stats.upstreamReloadErrors);
 * files.apply(cfg);            // throws a TlsFileError with .path on a bad file; nothing changes then
 * files.get('payments');       // what the shards get
 * files.close();
 */
export class UpstreamTlsFiles {
  readonly #log: Logger;
  readonly #onUpdate: () => void;
  readonly #errors: Map<string, number>;
  #entries = new Map<string, Entry>();

  constructor(log: Logger, onUpdate: () => void, errors: Map<string, number>) {
    this.#log = log;
    this.#onUpdate = onUpdate;
    this.#errors = errors;
  }

  /**
   * Reads the files of every upstream `tls` of `cfg` and watches them; the previous upstreams'
   * watchers stop. Throws the first {@link TlsFileError} (with `path`, the config key path),
   * leaving the running state as it was.
   */
  apply(cfg: GatehouseConfig): void {
    const next = new Map<string, Entry>();
    try {
      cfg.upstreams.forEach((u, i) => {
        if (u.tls) next.set(u.name, this.#load(u.name, u.tls, i, this.#entries.get(u.name)));
      });
    } catch (err) {
      for (const e of next.values()) e.watcher?.close();
      throw err;
    }
    this.close();
    this.#entries = next;
    for (const [name, e] of next) {
      if (e.cell.kept) {
        e.cell.kept.material = e.cell.material;
        e.cell = e.cell.kept;
      }
      inUse.set(e.config, e.cell);
      if (!e.config.verify) this.#log.warn({ upstream: name }, 'upstream tls.verify is false: backend certificates are not checked (anyone on the path can impersonate the backends)');
    }
  }

  /** Upstream `name`'s material for the shards, or undefined (no `tls`). */
  get(name: string): ShardUpstreamTls | undefined {
    return this.#entries.get(name)?.cell.material;
  }

  /** Stops watching (the material stays readable for what still holds it). Idempotent. */
  close(): void {
    for (const e of this.#entries.values()) e.watcher?.close();
    this.#entries = new Map();
  }

  /** Loads one upstream's files; `prev`, its entry before a reload, lends its cell when the settings are the same. */
  #load(name: string, config: UpstreamTlsConfig, index: number, prev: Entry | undefined): Entry {
    // The cell itself is shared only once apply() commits (see there): until then a copy.
    const cell = (m: ShardUpstreamTls): Cell => ({ material: m, ...(prev && JSON.stringify(prev.config) === JSON.stringify(config) && { kept: prev.cell }) });
    const pair = config.cert !== undefined && config.key !== undefined ? [{ cert: config.cert, key: config.key }] : [];
    if (pair.length === 0 && config.ca === undefined) return { config, watcher: undefined, cell: cell(material(config, undefined, undefined)) };
    const watcher = new CertificateWatcher({
      certificates: pair,
      ...(config.ca !== undefined && { ca: config.ca }),
      onChange: (pairs, ca) => this.#changed(name, pairs[0], ca),
      onError: (err, slot) => this.#failed(name, err, slot),
      onInternalError: (err) => this.#log.warn({ err, upstream: name }, 'certificate watcher problem (the periodic check goes on)'),
    });
    try {
      const loaded = watcher.start();
      return { config, watcher, cell: cell(material(config, loaded.pairs[0], loaded.ca)) };
    } catch (err) {
      watcher.close();
      const e = err as TlsFileError & { path?: string };
      e.path = `upstreams.${index}.tls.${e.which}`;
      throw e;
    }
  }

  #changed(name: string, pair: CertificatePair | undefined, ca: CaBundle | undefined): void {
    const e = this.#entries.get(name);
    if (!e) return;
    e.cell.material = material(e.config, pair, ca);
    this.#log.info({ upstream: name, ...(pair && { certificate: { subject: pair.subject, notAfter: pair.notAfter } }), ...(ca && { ca: e.config.ca }) }, 'upstream TLS files reloaded: new backend connections use them');
    this.#onUpdate();
  }

  #failed(name: string, err: TlsFileError, slot: number | 'ca'): void {
    this.#errors.set(name, (this.#errors.get(name) ?? 0) + 1);
    this.#log.error({ upstream: name, err, file: slot === 'ca' ? 'ca' : 'cert/key' }, 'upstream TLS file changed but failed its check: the previous one stays in use');
  }
}

function material(t: UpstreamTlsConfig, pair: CertificatePair | undefined, ca: CaBundle | undefined): ShardUpstreamTls {
  return {
    ...(t.serverName !== undefined && { serverName: t.serverName }),
    ...(ca && { caPem: ca.pem }),
    ...(pair && { certPem: pair.certPem, keyPem: pair.keyPem }),
    verify: t.verify,
    minVersion: t.minVersion,
  };
}
