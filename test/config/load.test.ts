import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, onTestFinished, test } from 'vitest';
import { ConfigError, formatConfigIssue } from '../../src/errors.ts';
import { loadConfigFile, parseConfig } from '../../src/config/load.ts';
import type { HttpListenerConfig, HubListenerConfig, TcpListenerConfig } from '../../src/config/load.ts';

// The full example of every section (docs/configuration.md), with long enough secrets.
const FULL_EXAMPLE = `
admin: { listen: 127.0.0.1:9901, token: optional-bearer-token }
runtime: { workers: 2, debug: false, shutdownTimeout: 30s }
log: { level: info }
cluster: { redis: redis://127.0.0.1:6379, instanceId: gw-1 }   # optional
upstreams:
  - name: app
    balance: round_robin        # round_robin | weighted_round_robin | least_connections | p2c
    backends: [ { address: 127.0.0.1:9001, weight: 1 } ]
    discovery: { service: app } # optional: backends from the service registry
    healthCheck: { type: tcp, path: /healthz, interval: 1s, timeout: 500ms,
                   unhealthyThreshold: 3, healthyThreshold: 2 }      # type: tcp | http
    circuitBreaker: { failureThreshold: 5, successThreshold: 1, openFor: 30s }
    pool: { maxConnections: 256, idleTimeout: 30s }
    connectTimeout: 2s
    connectRetries: 2
listeners:
  - name: tcp-in
    protocol: tcp
    listen: 127.0.0.1:15000
    upstream: app
    maxConnections: 10000
    maxConnectionsPerIp: 0       # 0 = no limit
    rateLimit: { perSecond: 1000, burst: 100 }   # new connections
    idleTimeout: 5m
  - name: web
    protocol: http
    listen: 127.0.0.1:18080
    routes:
      - name: api
        match: { host: api.example.com, pathPrefix: /v1, methods: [GET, POST] }
        upstream: app            # or split: [ { upstream: app, weight: 95 }, { upstream: canary, weight: 5 } ]
        sticky: { header: x-user-id }   # optional, with split
        stripPrefix: true
        auth: { jwt: { secret: s3cret-0123456789-0123456789-0123456789, issuer: iss, audience: aud, algorithms: [HS256] } }
                                 # or publicKey (PEM) or jwksUrl
        rateLimit: { perSecond: 50, burst: 10, key: ip }   # ip | header:NAME | jwt:sub
        cors: { origins: [https://app.example.com], credentials: true, maxAge: 86400 }
        timeout: 5s
        retries: 1               # idempotent methods only
        websocket: true          # Upgrade pass-through
  - name: hub
    protocol: hub
    listen: 127.0.0.1:18090
    path: /connect
    auth: { jwt: { secret: s3cret-0123456789-0123456789-0123456789 } }
    nodes: [ { id: n1, url: ws://127.0.0.1:7001/gate } ]   # or discovery: { service: nodes }
    maxClientsPerUser: 16
    maxMessageSize: 64KiB
    sendQueue: { maxMessages: 1000, onOverflow: close }    # close | drop-oldest
    presenceGrace: 100ms
    requestTimeout: 10s
    pingInterval: 20s
actors:
  - { name: audit, module: ./examples/actors/audit.ts, restart: permanent, options: {} }
`;

describe('parseConfig: the full example', () => {
  const cfg = parseConfig(FULL_EXAMPLE, 'gatehouse.yaml', { baseDir: '/etc/gatehouse' });

  test('top-level sections', () => {
    expect(cfg.admin).toEqual({ listen: { host: '127.0.0.1', port: 9901, address: '127.0.0.1:9901' }, token: 'optional-bearer-token' });
    expect(cfg.runtime).toEqual({ workers: 2, debug: false, shutdownTimeout: 30_000, watchdog: 5_000, watchConfig: false, connectionActor: 'light' });
    expect(cfg.log).toEqual({ level: 'info' });
    expect(cfg.cluster).toEqual({ redis: 'redis://127.0.0.1:6379', instanceId: 'gw-1', keyPrefix: 'gatehouse:', heartbeat: 5_000, deadAfter: 15_000 });
  });

  test('upstream', () => {
    expect(cfg.upstreams).toEqual([{
      name: 'app',
      balance: 'round_robin',
      backends: [{ host: '127.0.0.1', port: 9001, address: '127.0.0.1:9001', weight: 1 }],
      discovery: { service: 'app' },
      healthCheck: { enabled: true, type: 'tcp', path: '/healthz', interval: 1_000, timeout: 500, unhealthyThreshold: 3, healthyThreshold: 2 },
      circuitBreaker: { enabled: true, failureThreshold: 5, successThreshold: 1, openFor: 30_000 },
      pool: { maxConnections: 256, idleTimeout: 30_000 },
      connectTimeout: 2_000,
      connectRetries: 2,
    }]);
  });

  test('tcp listener', () => {
    expect(cfg.listeners[0]).toEqual({
      protocol: 'tcp', name: 'tcp-in', listen: { host: '127.0.0.1', port: 15_000, address: '127.0.0.1:15000' },
      upstream: 'app', maxConnections: 10_000, maxConnectionsPerIp: 0, rateLimit: { perSecond: 1_000, burst: 100 }, idleTimeout: 300_000,
    } satisfies TcpListenerConfig);
  });

  test('http listener and route', () => {
    const web = cfg.listeners[1] as HttpListenerConfig;
    expect(web.protocol).toBe('http');
    expect(web.routes).toEqual([{
      name: 'api',
      match: { host: 'api.example.com', pathPrefix: '/v1', methods: ['GET', 'POST'] },
      upstream: 'app',
      sticky: { header: 'x-user-id' },
      stripPrefix: true,
      auth: { jwt: { secret: 's3cret-0123456789-0123456789-0123456789', issuer: 'iss', audience: ['aud'], algorithms: ['HS256'], clockSkew: 30_000, requireExp: true } },
      rateLimit: { perSecond: 50, burst: 10, key: 'ip' },
      cors: { origins: ['https://app.example.com'], credentials: true, maxAge: 86_400 },
      timeout: 5_000,
      idleTimeout: 60_000,
      retries: 1,
      retryOn: ['connect-failure', 'reset'],
      websocket: true,
    }]);
  });

  test('hub listener', () => {
    const hub = cfg.listeners[2] as HubListenerConfig;
    expect(hub).toMatchObject({
      protocol: 'hub', path: '/connect', auth: { jwt: { secret: 's3cret-0123456789-0123456789-0123456789', algorithms: ['HS256'], clockSkew: 30_000, requireExp: true } },
      nodes: [{ id: 'n1', url: 'ws://127.0.0.1:7001/gate' }], maxClientsPerUser: 16, maxMessageSize: 65_536,
      sendQueue: { maxMessages: 1_000, onOverflow: 'close' }, presenceGrace: 100, requestTimeout: 10_000, pingInterval: 20_000,
    });
  });

  test('actor modules resolve against the base directory and keep the specifier', () => {
    expect(cfg.actors).toEqual([{
      name: 'audit', module: path.resolve('/etc/gatehouse/examples/actors/audit.ts'),
      moduleSpecifier: './examples/actors/audit.ts', restart: 'permanent', maxRestarts: 3, period: 5_000, options: {},
    }]);
  });
});

describe('parseConfig: defaults', () => {
  test('an empty file is a valid config', () => {
    const cfg = parseConfig('', 'empty.yaml');
    expect(cfg).toEqual({
      admin: { listen: { host: '127.0.0.1', port: 9901, address: '127.0.0.1:9901' } },
      runtime: { workers: os.availableParallelism(), debug: false, shutdownTimeout: 30_000, watchdog: 5_000, watchConfig: false, connectionActor: 'light' },
      log: { level: 'info' },
      upstreams: [],
      listeners: [],
      actors: [],
    });
  });

  test('empty sections read as absent', () => {
    expect(parseConfig('upstreams:\nlisteners: ~\nactors:\n', 'x.yaml').listeners).toEqual([]);
  });

  test('minimal upstream, listeners and actor get production defaults', () => {
    const cfg = parseConfig([
      'upstreams: [ { name: app, backends: ["10.0.0.1:80", { address: "[::1]:81", weight: 3 }] } ]',
      'listeners:',
      '  - { name: in, protocol: tcp, listen: 15000, upstream: app }',
      '  - { name: web, protocol: http, listen: ":8080", routes: [ { split: [ { upstream: app } ] } ] }',
      '  - { name: hub, protocol: hub, listen: 8090, auth: { jwt: { publicKey: PEM, algorithms: [ES256] } }, discovery: { service: nodes } }',
      'actors: [ { name: audit, module: "@acme/audit" } ]',
    ].join('\n'), 'min.yaml');
    const [up] = cfg.upstreams;
    expect(up!.backends).toEqual([
      { host: '10.0.0.1', port: 80, address: '10.0.0.1:80', weight: 1 },
      { host: '::1', port: 81, address: '[::1]:81', weight: 3 },
    ]);
    expect(up).toMatchObject({ balance: 'round_robin', connectTimeout: 2_000, connectRetries: 2 });
    expect(up!.circuitBreaker).toEqual({ enabled: true, failureThreshold: 5, successThreshold: 1, openFor: 30_000 });
    expect(cfg.listeners[0]).toMatchObject({ listen: { host: '0.0.0.0', port: 15_000 }, maxConnections: 10_000, maxConnectionsPerIp: 0, idleTimeout: 300_000 });
    expect((cfg.listeners[1] as HttpListenerConfig).routes[0]).toMatchObject({
      name: 'route-0', match: { pathPrefix: '/' }, split: [{ upstream: 'app', weight: 1 }], timeout: 30_000, retries: 0, stripPrefix: false, websocket: false,
    });
    expect(cfg.listeners[2]).toMatchObject({
      path: '/connect', auth: { jwt: { algorithms: ['ES256'], clockSkew: 30_000, requireExp: true } }, discovery: { service: 'nodes', path: '/' },
      maxClientsPerUser: 16, maxMessageSize: 65_536, presenceGrace: 100, requestTimeout: 10_000, pingInterval: 20_000,
      clientRateLimit: { perSecond: 100, burst: 200 },
    });
    expect(cfg.actors[0]).toEqual({ name: 'audit', module: '@acme/audit', moduleSpecifier: '@acme/audit', restart: 'permanent', maxRestarts: 3, period: 5_000, options: {} });
  });

  test('runtime knobs', () => {
    expect(parseConfig('runtime: { workers: 0, debug: true, connectionActor: xstate }', 'x.yaml').runtime)
      .toEqual({ workers: 0, debug: true, shutdownTimeout: 30_000, watchdog: 5_000, watchConfig: false, connectionActor: 'xstate' });
  });
});

describe('loadConfigFile', () => {
  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'gatehouse-config-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  test('reads the file and resolves actor modules next to it', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'gh.yaml');
    await writeFile(file, 'actors: [ { name: a, module: ./actors/a.ts } ]\n');
    expect((await loadConfigFile(file)).actors[0]!.module).toBe(path.join(dir, 'actors', 'a.ts'));
  });

  test('a missing file is a ConfigError naming the file as given', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'nope.yaml');
    const err = await loadConfigFile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('GH_ERR_CONFIG');
    expect((err as ConfigError).issues.map(formatConfigIssue)).toEqual([`${file}:1:1 (root): cannot read config file: no such file`]);
  });

  test('the quickstart example is valid', async () => {
    const cfg = await loadConfigFile('examples/quickstart.yaml');
    expect(cfg.listeners.map((l) => l.name)).toContain('tcp-in');
  });
});
