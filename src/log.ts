import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';

/**
 * pino-pretty is loaded only when pretty output is used (a TTY): every shard thread builds a
 * logger, and a module it never uses would sit in its heap, which every full collection walks.
 */
const requireModule = createRequire(import.meta.url);

export interface LogOptions {
  level?: string;
  /** Pretty output; defaults to whether stdout is a TTY. */
  pretty?: boolean;
  /** Fixed bindings (e.g. `{ shard: 1 }`). */
  base?: Record<string, unknown>;
}

/**
 * The process logger: pino JSON lines on stdout, pretty-printed when stdout is a TTY (or
 * GATEHOUSE_LOG_PRETTY=1). Actors log through child loggers bound to `actorId` and `actorType`.
 *
 * @example
 * const log = createLogger({ level: 'info' });
 * log.child({ actorId: 'listener:web', actorType: 'listener' }).info('listening');
 */
export function createLogger(opts: LogOptions = {}): Logger {
  const usePretty = opts.pretty ?? (process.env.GATEHOUSE_LOG_PRETTY === '1' || (process.stdout.isTTY === true && process.env.GATEHOUSE_LOG_PRETTY !== '0'));
  const options: pino.LoggerOptions = {
    level: opts.level ?? 'info',
    base: { pid: process.pid, ...opts.base },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (usePretty) return pino(options, (requireModule('pino-pretty') as typeof import('pino-pretty'))({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid' }));
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
