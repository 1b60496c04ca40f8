import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/** Quiet time after a file event before the file is read (editors write in several steps). */
export const CONFIG_DEBOUNCE_MS = 300;
/** The file is also read this often, whatever the events (network file systems, missed events). */
export const CONFIG_POLL_MS = 5_000;

export interface ConfigWatcherOptions {
  file: string;
  /** Called once per distinct new content of the file (not for a `touch` or an identical rewrite). */
  onChange: () => void;
  /** The file could not be read (deleted meanwhile, permissions): once per distinct failure. */
  onError?: (err: NodeJS.ErrnoException) => void;
  debounceMs?: number;
  pollMs?: number;
}

const hashOf = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/**
 * `runtime.watchConfig`: watches the config file and calls `onChange` when its content changed.
 * It watches the file's directory, not the file, because editors and Kubernetes ConfigMaps
 * replace a file by a rename or a `..data` symlink swap, which a watch on the file misses; a
 * burst of events runs one check once quiet for `debounceMs`; a poll every `pollMs` catches what
 * a watch misses. A check compares a content hash with the last content seen, so a save with
 * the same bytes reloads nothing, and a file that is broken is reported by the reload once, not
 * at every event: the next distinct content reloads again.
 *
 * @example
 * const w = new ConfigWatcher({ file, onChange: () => void gh.reload() });
 * w.close();
 */
export class ConfigWatcher {
  readonly #opts: ConfigWatcherOptions;
  #last: string | undefined;
  #lastError: string | undefined;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  readonly #poll: NodeJS.Timeout;
  #closed = false;

  constructor(opts: ConfigWatcherOptions) {
    this.#opts = opts;
    try {
      this.#last = hashOf(opts.file);
    } catch {
      this.#last = undefined;
    }
    this.#watch();
    this.#poll = setInterval(() => {
      this.#watch();
      this.check();
    }, opts.pollMs ?? CONFIG_POLL_MS);
    this.#poll.unref();
  }

  /** Reads the file now and calls `onChange` when its content differs from the last one seen. */
  check(): void {
    if (this.#closed) return;
    let hash: string;
    try {
      hash = hashOf(this.#opts.file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const key = `${e.code}:${e.message}`;
      if (key !== this.#lastError) {
        this.#lastError = key;
        this.#opts.onError?.(e);
      }
      return;
    }
    this.#lastError = undefined;
    if (hash === this.#last) return;
    this.#last = hash;
    this.#opts.onChange();
  }

  /** Stops watching; no callback is called after it. Idempotent. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  #watch(): void {
    if (this.#watcher || this.#closed) return;
    try {
      const w = watch(path.dirname(this.#opts.file), { persistent: false }, () => this.#schedule());
      w.on('error', () => {
        // The directory went away or the watch broke: the poll watches again.
        w.close();
        if (this.#watcher === w) this.#watcher = undefined;
      });
      this.#watcher = w;
    } catch {
      // Missing directory: the poll tries again.
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.check(), this.#opts.debounceMs ?? CONFIG_DEBOUNCE_MS);
    this.#debounce.unref();
  }
}
