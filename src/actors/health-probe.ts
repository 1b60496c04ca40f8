import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { encodeProxyHeader } from '../net/proxy-protocol.ts';
import { assign, fromPromise, setup } from 'xstate';
import type { Logger } from 'pino';
import { ADMIN, B, type StateTable } from '../workers/state-table.ts';

export interface ProbeTarget {
  type: 'tcp' | 'http';
  host: string;
  port: number;
  /** Request path of `http` probes. */
  path: string;
  timeoutMs: number;
  /** Upstream `tls` (PEM contents): `http` probes speak HTTPS, checked as the proxied traffic is; `tcp` probes still only connect. */
  tls?: { caPem?: string; certPem?: string; keyPem?: string; serverName?: string; verify: boolean };
  /** Upstream `sendProxyProtocol`: each probe connection starts with a LOCAL header (a health check, no client). */
  sendProxyProtocol?: 'v1' | 'v2';
}

export interface HealthProbeInput extends ProbeTarget {
  table: StateTable;
  /** The backend's row in the state table. */
  slot: number;
  backend: string;
  intervalMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /**
   * A backend added while the daemon runs (a reload, discovery): the caller published it
   * unhealthy, and the first passing probe makes it healthy. No traffic reaches it unprobed.
   */
  pending?: boolean;
  log: Logger;
}

interface HealthProbeContext extends HealthProbeInput {
  /** Consecutive passes and failures since the verdict last changed (or the actor started). */
  passes: number;
  fails: number;
  /** Not probed yet since it was added: one pass is enough (cleared by the first result). */
  pending: boolean;
  startedAt: number;
  lastError: string | undefined;
}

/**
 * One probe: `tcp` passes when a connection is established; `http` when `GET path` answers
 * 2xx or 3xx (HAProxy's `httpchk` default). Either fails after `timeoutMs`. Each probe opens a
 * fresh connection and closes it (no keep-alive pool): a probe must see what a new client would,
 * and a pooled socket kept open would hide a backend that stopped accepting.
 *
 * @example
 * await probeOnce({ type: 'http', host: '127.0.0.1', port: 9001, path: '/healthz', timeoutMs: 500 }, signal);
 */
export function probeOnce(t: ProbeTarget, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      cleanup();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = (): void => finish(new Error('probe aborted'));
    const timer = setTimeout(() => finish(onTimeout()), t.timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    let cleanup: () => void;
    let onTimeout: () => Error | undefined;
    if (t.type === 'tcp') {
      // Passes at connect; then closes politely (FIN, reading what the backend says) so that a
      // backend sees an orderly close, not a reset, and resolves once the socket is closed.
      const s = net.connect({ host: t.host, port: t.port });
      if (t.sendProxyProtocol) s.write(encodeProxyHeader({ version: t.sendProxyProtocol === 'v1' ? 1 : 2 }));
      let connected = false;
      s.once('connect', () => {
        connected = true;
        s.end();
        s.resume();
      });
      s.on('error', (err) => finish(connected ? undefined : err));
      s.once('close', () => finish(connected ? undefined : new Error('closed before connecting')));
      cleanup = () => s.destroy();
      onTimeout = () => (connected ? undefined : new Error(`no connection within ${t.timeoutMs} ms`));
    } else {
      let status = 0;
      const x = t.tls;
      const pp = t.sendProxyProtocol;
      // With sendProxyProtocol, the probe's own connection starts with a LOCAL header (under TLS).
      const rawWithHeader = (): net.Socket => {
        const raw = net.connect({ host: t.host, port: t.port });
        raw.write(encodeProxyHeader({ version: pp === 'v1' ? 1 : 2 }));
        return raw;
      };
      const createConnection = pp === undefined ? undefined : x ? (o: tls.ConnectionOptions) => tls.connect({ ...o, socket: rawWithHeader() }) : rawWithHeader;
      const opts = { host: t.host, port: t.port, path: t.path, method: 'GET', agent: false, headers: { 'user-agent': 'gatehouse-health-probe', connection: 'close' }, ...(createConnection && { createConnection }) };
      const onRes = (res: http.IncomingMessage): void => {
        status = res.statusCode ?? 0;
        res.resume();
        res.once('end', () => finish(verdict()));
      };
      const req = x
        ? https.request(
            {
              ...opts,
              ...(x.serverName !== undefined ? { servername: x.serverName } : net.isIP(t.host) === 0 ? { servername: t.host } : {}),
              ...(x.caPem !== undefined && { ca: x.caPem }),
              ...(x.certPem !== undefined && { cert: x.certPem, key: x.keyPem }),
              rejectUnauthorized: x.verify,
              ...(!x.verify && { checkServerIdentity: () => undefined }),
            } as https.RequestOptions,
            onRes,
          )
        : http.request(opts as http.RequestOptions, onRes);
      const verdict = (): Error | undefined => (status >= 200 && status < 400 ? undefined : new Error(`HTTP ${status}`));
      req.on('error', (err) => finish(status ? verdict() : err));
      req.end();
      cleanup = () => req.destroy();
      // A status line in time is an answer; a body that never ends does not fail the probe.
      onTimeout = () => (status ? verdict() : new Error(`no answer within ${t.timeoutMs} ms`));
    }
  });
}

/**
 * A backend's active health probe, the single writer of its `HEALTHY` cell in the state table.
 * It probes at once, then every `interval` (start to start). `unhealthyThreshold` failures in a
 * row mark a healthy backend unhealthy; `healthyThreshold` passes in a row mark an unhealthy one
 * healthy again: one odd result never flips the verdict (no flapping).
 *
 * The verdict lives in the table: a restarted probe starts from the table's verdict with fresh
 * counts, so a crash neither loses nor flips it.
 *
 * @example
 * new MachineActor({ id: 'probe:app/127.0.0.1:9001', type: 'healthProbe', logic: healthProbeMachine, input }).start();
 */
export const healthProbeMachine = setup({
  types: { context: {} as HealthProbeContext, input: {} as HealthProbeInput },
  actors: {
    probe: fromPromise<void, ProbeTarget>(({ input, signal }) => probeOnce(input, signal)),
  },
  guards: {
    becameHealthy: ({ context: c }) => c.table.backendGet(c.slot, B.HEALTHY) !== 1 && (c.pending || c.passes + 1 >= c.healthyThreshold),
    becameUnhealthy: ({ context: c }) => c.table.backendGet(c.slot, B.HEALTHY) === 1 && c.fails + 1 >= c.unhealthyThreshold,
    // Disabled through the admin API (maintenance): not probed, its verdict kept as it was.
    inMaintenance: ({ context: c }) => c.table.backendGet(c.slot, B.ADMIN) === ADMIN.MAINT,
  },
  actions: {
    markHealthy: ({ context: c }) => {
      c.table.backendSet(c.slot, B.HEALTHY, 1);
      c.log.info({ backend: c.backend, passes: c.passes + 1 }, 'backend healthy');
    },
    markUnhealthy: ({ context: c }, params: { error: unknown }) => {
      c.table.backendSet(c.slot, B.HEALTHY, 0);
      c.log.warn({ backend: c.backend, fails: c.fails + 1, error: (params.error as Error)?.message }, 'backend unhealthy');
    },
    pass: assign({ passes: ({ context }) => context.passes + 1, fails: 0, lastError: undefined }),
    fail: assign({ fails: ({ context }) => context.fails + 1, passes: 0, pending: false, lastError: ({ event }) => String((event as { error?: Error }).error?.message ?? 'failed') }),
    resetCounts: assign({ passes: 0, fails: 0, pending: false }),
    stamp: assign({ startedAt: () => performance.now() }),
  },
  delays: {
    // Start to start: a slow probe does not stretch the interval.
    nextProbe: ({ context }) => Math.max(0, context.intervalMs - (performance.now() - context.startedAt)),
  },
}).createMachine({
  id: 'healthProbe',
  context: ({ input }) => ({ ...input, passes: 0, fails: 0, pending: input.pending === true, startedAt: 0, lastError: undefined }),
  initial: 'due',
  states: {
    due: {
      always: [{ guard: 'inMaintenance', target: 'waiting', actions: 'stamp' }, { target: 'probing' }],
    },
    probing: {
      entry: 'stamp',
      invoke: {
        src: 'probe',
        input: ({ context: c }) => ({ type: c.type, host: c.host, port: c.port, path: c.path, timeoutMs: c.timeoutMs, tls: c.tls, sendProxyProtocol: c.sendProxyProtocol }),
        onDone: [
          { guard: 'becameHealthy', target: 'waiting', actions: ['markHealthy', 'resetCounts'] },
          { target: 'waiting', actions: 'pass' },
        ],
        onError: [
          { guard: 'becameUnhealthy', target: 'waiting', actions: [{ type: 'markUnhealthy', params: ({ event }) => ({ error: event.error }) }, 'resetCounts'] },
          { target: 'waiting', actions: 'fail' },
        ],
      },
    },
    waiting: {
      after: { nextProbe: 'due' },
    },
  },
});
