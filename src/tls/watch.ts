/**
 * Reloads a listener's certificates when their files change, without a restart, and says which
 * certificates expire soon.
 *
 * The watcher watches the files' parent directories, not the files: certbot and cert-manager
 * replace a file by renaming a new one over it, or by swapping a `..data` symlink, which a watch
 * on the file itself misses. Events come in bursts (a certificate, then its key), so a check
 * runs once a burst has been quiet for `debounceMs`; a slow poll (`pollMs`) catches what a
 * watch misses (a network file system, a directory created later). A check reads every file,
 * compares content hashes (a `touch` or a rewrite with the same bytes reloads nothing), and
 * checks each changed pair. A pair that fails (a key written a second after its certificate,
 * say) is reported once per distinct content and checked again at the next event or poll: it
 * is never given up on. Until it passes, the old pair is kept and served.
 */
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { caFromContent, contentHash, pairFromContent, readTlsFile, TlsFileError, type CaBundle, type CertificatePair } from './certificates.ts';

/** Quiet time after a file event before the files are read. */
export const CERT_DEBOUNCE_MS = 200;
/** Files are also read this often, whatever the events. */
export const CERT_POLL_MS = 30_000;
/** Certificates expiring within this are warned about. */
export const EXPIRY_WARNING_MS = 14 * 24 * 60 * 60 * 1000;

/** Where the certificate `index` (or the CA file, `'ca'`) of an error is. */
export type CertificateSlot = number | 'ca';

/** Options of {@link CertificateWatcher}. */
export interface CertificateWatcherOptions {
  /** The listener's certificates, in order (absolute paths). */
  certificates: readonly { cert: string; key: string }[];
  /** The listener's `clientAuth.ca`, watched too. */
  ca?: string;
  /**
   * After a change, with every certificate (each valid: a failing one is still its old pair)
   * and the CA bundle. Called once per check, however many files changed.
   */
  onChange?: (pairs: CertificatePair[], ca: CaBundle | undefined) => void;
  /** A changed file failed its check; the old pair (or CA) is kept. Once per distinct failing content. */
  onError?: (err: TlsFileError, index: CertificateSlot) => void;
  /** A callback threw, or a directory watch failed (the poll goes on). Default: `process.emitWarning`. */
  onInternalError?: (err: unknown) => void;
  debounceMs?: number;
  pollMs?: number;
}

/**
 * Watches one listener's certificate files (and its client CA file).
 *
 * @example
 * const w = new CertificateWatcher({
 *   certificates: tls.certificates, ca: tls.clientAuth?.ca,
 *   onChange: (pairs, ca) => shards.post({ type: 'tls', listener, pairs, ca: ca?.pem }),
 *   onError: (err, i) => { log.error({ err, certificate: i }, 'certificate not reloaded'); failures.inc(); },
 * });
 * const { pairs, ca } = w.start(); // throws a TlsFileError if a file is bad now
 * ...
 * w.close();
 */
export class CertificateWatcher {
  readonly #opts: CertificateWatcherOptions;
  readonly #debounceMs: number;
  readonly #pollMs: number;
  #pairs: CertificatePair[] = [];
  #ca: CaBundle | undefined;
  /** The content hash last reported as failing, per slot: reported once, checked again every time. */
  readonly #failed = new Map<CertificateSlot, string>();
  readonly #watchers = new Map<string, FSWatcher>();
  #debounce: NodeJS.Timeout | undefined;
  #burstStart = 0;
  #poll: NodeJS.Timeout | undefined;
  #state: 'new' | 'running' | 'closed' = 'new';
  #checks = 0;

  constructor(opts: CertificateWatcherOptions) {
    this.#opts = opts;
    this.#debounceMs = opts.debounceMs ?? CERT_DEBOUNCE_MS;
    this.#pollMs = opts.pollMs ?? CERT_POLL_MS;
  }

  /** The pairs in use (the last valid ones). */
  get pairs(): readonly CertificatePair[] {
    return this.#pairs;
  }

  get ca(): CaBundle | undefined {
    return this.#ca;
  }

  /** How many checks ran (after events, polls and {@link check} calls): tests await it. */
  get checks(): number {
    return this.#checks;
  }

  /**
   * Loads every file and starts watching. Throws the first {@link TlsFileError} if a file is
   * bad now: at start there is no old pair to keep.
   */
  start(): { pairs: CertificatePair[]; ca: CaBundle | undefined } {
    if (this.#state !== 'new') throw new Error(`CertificateWatcher already ${this.#state === 'running' ? 'started' : 'closed'}`);
    this.#pairs = this.#opts.certificates.map((c) => pairFromContent(c.cert, c.key, readTlsFile(c.cert, 'cert'), readTlsFile(c.key, 'key')));
    this.#ca = this.#opts.ca === undefined ? undefined : caFromContent(this.#opts.ca, readTlsFile(this.#opts.ca, 'ca'));
    this.#state = 'running';
    this.#watchDirs();
    this.#poll = setInterval(() => this.#tick(), this.#pollMs);
    this.#poll.unref();
    return { pairs: [...this.#pairs], ca: this.#ca };
  }

  /** Stops watching; no callback is called after it. Idempotent. */
  close(): void {
    this.#state = 'closed';
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    this.#debounce = undefined;
    this.#poll = undefined;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }

  /** Reads every file now and applies what changed (the poll and the debounced events call it). */
  check(): void {
    if (this.#state !== 'running') return;
    this.#checks++;
    let changed = false;
    const pairs = [...this.#pairs];
    this.#opts.certificates.forEach((c, i) => {
      const next = this.#attempt(i, pairs[i]!.contentHash, () => [readTlsFile(c.cert, 'cert'), readTlsFile(c.key, 'key')], ([cert, key]) => pairFromContent(c.cert, c.key, cert!, key!));
      if (next !== undefined) {
        pairs[i] = next;
        changed = true;
      }
    });
    const caFile = this.#opts.ca;
    if (caFile !== undefined) {
      const next = this.#attempt('ca', this.#ca?.contentHash, () => [readTlsFile(caFile, 'ca')], ([bytes]) => caFromContent(caFile, bytes!));
      if (next !== undefined) {
        this.#ca = next;
        changed = true;
      }
    }
    if (!changed) return;
    this.#pairs = pairs;
    this.#safely(() => this.#opts.onChange?.([...pairs], this.#ca));
  }

  /**
   * Reads one slot's files and, if their content is new, checks it. Returns the new value, or
   * undefined when nothing is to change: the same content as in use, or content that failed
   * (reported the first time it is seen).
   */
  #attempt<T>(slot: CertificateSlot, current: string | undefined, read: () => Buffer[], parse: (bytes: Buffer[]) => T): T | undefined {
    let key: string | undefined;
    try {
      const bytes = read();
      const hash = contentHash(...bytes);
      if (hash === current) {
        this.#failed.delete(slot);
        return undefined;
      }
      key = hash;
      if (this.#failed.get(slot) === key) return undefined;
      const value = parse(bytes);
      this.#failed.delete(slot);
      return value;
    } catch (err) {
      if (!(err instanceof TlsFileError)) {
        this.#internalError(err);
        return undefined;
      }
      // A read error has no content: it is "the same failure" while its reason and file are.
      key ??= `${err.reason}:${err.file}`;
      if (this.#failed.get(slot) !== key) {
        this.#failed.set(slot, key);
        this.#safely(() => this.#opts.onError?.(err, slot));
      }
      return undefined;
    }
  }

  #tick(): void {
    this.#watchDirs();
    this.check();
  }

  /**
   * Runs a check once events have been quiet for `debounceMs`, or at the latest 10 × `debounceMs`
   * after the first (a directory that never goes quiet, a busy log file next to the certificates,
   * does not hold a check back for ever).
   */
  #schedule(): void {
    if (this.#state !== 'running') return;
    const now = Date.now();
    if (this.#debounce === undefined) this.#burstStart = now;
    else if (now - this.#burstStart >= 10 * this.#debounceMs) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.check();
    }, this.#debounceMs);
    this.#debounce.unref();
  }

  /** Watches each parent directory not watched yet (one that is missing is tried again at the next poll). */
  #watchDirs(): void {
    const files = [...this.#opts.certificates.flatMap((c) => [c.cert, c.key]), ...(this.#opts.ca === undefined ? [] : [this.#opts.ca])];
    for (const dir of new Set(files.map((f) => path.dirname(f)))) {
      if (this.#watchers.has(dir)) continue;
      let w: FSWatcher;
      try {
        w = watch(dir, { persistent: false }, () => this.#schedule());
      } catch {
        continue;
      }
      w.on('error', (err) => {
        // The directory went away (or the watch broke): drop it, the poll re-creates it.
        w.close();
        if (this.#watchers.get(dir) === w) this.#watchers.delete(dir);
        this.#internalError(err);
        this.#schedule();
      });
      this.#watchers.set(dir, w);
    }
  }

  #safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#internalError(err);
    }
  }

  #internalError(err: unknown): void {
    try {
      if (this.#opts.onInternalError) this.#opts.onInternalError(err);
      else process.emitWarning(err instanceof Error ? err : String(err), { code: 'GH_CERT_WATCH' });
    } catch {
      // Nothing left to tell.
    }
  }
}

/** A certificate that expires soon (or has expired). */
export interface ExpiringCertificate {
  index: number;
  pair: CertificatePair;
  notAfter: Date;
  /** Negative once expired. */
  msLeft: number;
  expired: boolean;
}

/**
 * The certificates that expire within `withinMs` of `now` (14 days by default), or have
 * expired, soonest first. A pure function: call it at start, after a change, and daily.
 *
 * @example
 * for (const e of expiry(watcher.pairs, Date.now())) log.warn({ certFile: e.pair.certFile, notAfter: e.notAfter }, 'certificate expires soon');
 */
export function expiry(pairs: readonly CertificatePair[], now: number | Date, withinMs = EXPIRY_WARNING_MS): ExpiringCertificate[] {
  const t = typeof now === 'number' ? now : now.getTime();
  return pairs
    .map((pair, index) => ({ index, pair, notAfter: pair.notAfter, msLeft: pair.notAfter.getTime() - t, expired: pair.notAfter.getTime() <= t }))
    .filter((e) => e.msLeft <= withinMs)
    .sort((a, b) => a.msLeft - b.msLeft);
}
