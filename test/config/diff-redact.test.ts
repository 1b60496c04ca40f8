import { describe, expect, test } from 'vitest';
import { diffConfig, parseConfig, redactConfig } from '../../src/config/load.ts';

const BASE = [
  'admin: { listen: 127.0.0.1:9901 }',
  'upstreams:',
  '  - { name: app, backends: ["127.0.0.1:9001"] }',
  '  - { name: old, backends: ["127.0.0.1:9002"] }',
  'listeners:',
  '  - { name: in, protocol: tcp, listen: 15000, upstream: app }',
  'actors: [ { name: audit, module: ./audit.ts } ]',
];

const cfg = (lines: string[]) => parseConfig(lines.join('\n'), 'gh.yaml', { baseDir: '/srv' });

describe('diffConfig', () => {
  test('identical configs, even written differently, have no difference', () => {
    const other = cfg([...BASE, 'log: { level: info }', 'runtime: { shutdownTimeout: 30000ms }']);
    expect(diffConfig(cfg(BASE), other)).toEqual({ added: [], removed: [], changed: [] });
  });

  test('names what was added, removed and changed', () => {
    const next = cfg([
      'admin: { listen: 127.0.0.1:9902 }',
      'log: { level: debug }',
      'cluster: { redis: "redis://r:6379" }',
      'upstreams:',
      '  - { name: app, backends: ["127.0.0.1:9001"], connectTimeout: 1s }',
      '  - { name: canary, backends: ["127.0.0.1:9003"] }',
      'listeners:',
      '  - { name: in, protocol: tcp, listen: 15000, upstream: app }',
      '  - { name: web, protocol: http, listen: 8080, routes: [ { upstream: canary } ] }',
      'actors: [ { name: audit, module: ./audit.ts, options: { file: /tmp/a } } ]',
    ]);
    expect(diffConfig(cfg(BASE), next)).toEqual({
      added: ['cluster', 'upstream:canary', 'listener:web'],
      removed: ['upstream:old'],
      changed: ['admin', 'log', 'upstream:app', 'actor:audit'],
    });
  });
});

describe('redactConfig', () => {
  const c = cfg([
    'admin: { listen: 9901, token: t0ps3cret }',
    'cluster: { redis: "redis://user:hunter2@r:6379/0", instanceId: gw-1 }',
    'upstreams: [ { name: app, backends: ["h:1"] } ]',
    'listeners:',
    '  - name: web',
    '    protocol: http',
    '    listen: 8080',
    '    routes: [ { upstream: app, auth: { jwt: { secret: s3cret-0123456789-0123456789-0123456789 } } }, { upstream: app, auth: { jwt: { publicKey: PEM, algorithms: [RS256] } } } ]',
    'actors: [ { name: db, module: ./db.ts, options: { password: pw, nested: { apiToken: tk, clientSecret: cs }, keep: me } } ]',
  ]);
  const r = redactConfig(c);

  test('replaces the admin token, JWT secrets, redis password and secret-looking options', () => {
    expect(r.admin.token).toBe('[redacted]');
    expect(r.cluster?.redis).toBe('redis://user:[redacted]@r:6379/0');
    const routes = (r.listeners[0] as { routes: { auth?: { jwt: { secret?: string; publicKey?: string } } }[] }).routes;
    expect(routes[0]!.auth!.jwt.secret).toBe('[redacted]');
    expect(routes[1]!.auth!.jwt.publicKey).toBe('PEM');
    expect(r.actors[0]!.options).toEqual({ password: '[redacted]', nested: { apiToken: '[redacted]', clientSecret: '[redacted]' }, keep: 'me' });
  });

  test('leaves everything else alone and does not touch the original', () => {
    expect(r.cluster?.instanceId).toBe('gw-1');
    expect(r.admin.listen).toEqual(c.admin.listen);
    expect(c.admin.token).toBe('t0ps3cret');
    expect(JSON.stringify(r)).not.toMatch(/t0ps3cret|hunter2|s3cret|"pw"|"tk"|"cs"/);
  });

  test('a password-less URL is unchanged', () => {
    expect(redactConfig({ redis: 'redis://r:6379' })).toEqual({ redis: 'redis://r:6379' });
  });
});
