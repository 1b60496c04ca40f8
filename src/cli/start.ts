import type { Logger } from 'pino';
import { loadConfigOrReport } from './load-config.ts';
import { createLogger } from '../log.ts';
import { Gatehouse } from '../daemon/gatehouse.ts';
import { crashCustomActor } from '../actors/custom.ts';

/** The signals `gatehouse start` handles. */
export type StartSignal = 'SIGTERM' | 'SIGINT' | 'SIGHUP';

/**
 * Hands the process's signals to `gatehouse start`: it calls the handler for each signal,
 * starting with those that arrived before (bin/gatehouse.mjs queues them from its first line).
 */
export type SignalSource = (handler: (signal: StartSignal) => void) => void;

/** Without the CLI shim (a direct call of `main`), the handlers are installed here. */
export const processSignals: SignalSource = (handler) => {
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, () => handler(s));
};

/**
 * `gatehouse start`: runs the daemon until SIGTERM or SIGINT, then drains and stops it. Returns
 * the exit code: 0 after a stop on a signal (also during start-up), 1 when the config is bad,
 * the start fails, the root supervisor gives up or the stop fails.
 *
 * Signals during start-up: SIGTERM/SIGINT cut the start short (what has started stops, in order)
 * and exit 0; SIGHUP reloads once the start has finished. A second SIGTERM/SIGINT exits 1 at once.
 *
 * @example
 * process.exitCode = await start('gatehouse.yaml', false, processSignals);
 */
export async function start(file: string, debug: boolean, signals: SignalSource): Promise<number> {
  const stop = new AbortController();
  let log: Logger | undefined;
  let gh: Gatehouse | undefined;
  let started = false;
  let reloadWhenStarted = false;
  let stopSignals = 0;
  let timeoutMs: number | undefined;
  const shuttingDown = (signal: string): void => {
    log?.info({ signal, timeoutMs: gh?.current.runtime.shutdownTimeout ?? timeoutMs, startingUp: !started }, 'shutting down');
  };
  signals((signal) => {
    if (signal === 'SIGHUP') {
      if (started && gh) {
        log?.info({ file }, 'SIGHUP: reloading');
        void gh.reload();
      } else if (!stop.signal.aborted) {
        reloadWhenStarted = true;
        log?.info({ signal }, 'signal during start-up: reloading once started');
      }
      return;
    }
    if (++stopSignals > 1) {
      if (log) log.warn({ signal }, 'second signal: exiting without waiting for the drain');
      else process.stderr.write(`gatehouse: second ${signal}: exiting at once\n`);
      process.exit(1);
    }
    shuttingDown(signal);
    stop.abort(signal);
  });

  const config = await loadConfigOrReport(file);
  if (!config) return 1;
  timeoutMs = config.runtime.shutdownTimeout;
  log = createLogger({ level: debug && config.log.level === 'info' ? 'debug' : config.log.level });
  const logger = log;
  installCrashHandlers(logger);
  if (stop.signal.aborted) {
    // The signal came before the logger existed: its line is written now. Nothing has started.
    shuttingDown(String(stop.signal.reason));
    return 0;
  }
  if (reloadWhenStarted) logger.info({ signal: 'SIGHUP' }, 'signal during start-up: reloading once started');

  try {
    gh = await Gatehouse.start({ config, configFile: file, log: logger, debug, signal: stop.signal });
  } catch (err) {
    logger.fatal({ err }, 'gatehouse failed to start');
    return 1;
  }
  const daemon = gh;
  if (stop.signal.aborted) return stopped(daemon, logger);
  started = true;
  if (reloadWhenStarted) {
    logger.info({ file }, 'SIGHUP: reloading');
    void daemon.reload();
  }
  return new Promise<number>((resolve) => {
    stop.signal.addEventListener('abort', () => void stopped(daemon, logger).then(resolve), { once: true });
    daemon.root.monitor((down) => {
      // Gatehouse has logged 'root supervisor gave up'; stop what is left and exit 1.
      if (down.reason === 'error') daemon.stop().finally(() => resolve(1));
    });
  });
}

async function stopped(gh: Gatehouse, log: Logger): Promise<number> {
  try {
    await gh.stop();
    return 0;
  } catch (err) {
    log.error({ err }, 'shutdown failed');
    return 1;
  }
}

/**
 * An error thrown by a custom actor's code outside xstate (a timer, a socket callback, a
 * rejected promise nobody awaited) crashes that actor, and its supervisor restarts it. Any other
 * uncaught error is a control-plane bug: logged with its stack, then the process exits 70.
 */
function installCrashHandlers(log: Logger): void {
  const onError = (err: unknown, origin: string): void => {
    const owner = crashCustomActor(err);
    if (owner) {
      log.error({ err, origin, actorId: owner.actorId, outcome: owner.outcome }, 'custom actor code threw: the actor crashed');
      return;
    }
    log.fatal({ err, origin }, 'uncaught exception in the control plane');
    process.exit(70);
  };
  process.on('uncaughtException', (err) => onError(err, 'uncaughtException'));
  process.on('unhandledRejection', (reason) => onError(reason, 'unhandledRejection'));
}
