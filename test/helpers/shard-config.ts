import type { ShardConfig } from '../../src/workers/shard-config.ts';

/** What a test may change in {@link tcpShardConfig}. */
export interface TcpShardOptions {
  /** The listener's port (0: any). */
  port?: number;
  shutdownTimeoutMs?: number;
  maxConnections?: number;
  maxConnectionsPerIp?: number;
}

/**
 * A shard's config with one tcp listener `t` in front of one backend (`app`), as the control
 * plane hands it to a shard: table slots assigned, every duration in ms.
 *
 * @example
 * const config = tcpShardConfig(echo.port, { shutdownTimeoutMs: 60_000 });
 */
export function tcpShardConfig(backendPort: number, o: TcpShardOptions = {}): ShardConfig {
  return {
    listeners: [
      {
        name: 't',
        protocol: 'tcp',
        host: '127.0.0.1',
        port: o.port ?? 0,
        upstream: 'app',
        maxConnections: o.maxConnections ?? 100,
        maxConnectionsPerIp: o.maxConnectionsPerIp ?? 0,
        idleTimeoutMs: 0,
        slot: 0,
      },
    ],
    upstreams: [
      {
        name: 'app',
        balance: 'round_robin',
        connectTimeoutMs: 1_000,
        connectRetries: 1,
        failureThreshold: 0,
        backends: [{ address: `127.0.0.1:${backendPort}`, host: '127.0.0.1', port: backendPort, weight: 1, slot: 0 }],
      },
    ],
    connectionActor: 'light',
    shutdownTimeoutMs: o.shutdownTimeoutMs ?? 5_000,
    debug: false,
    logLevel: 'silent',
  };
}
