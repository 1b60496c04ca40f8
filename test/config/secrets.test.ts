/**
 * `${env:NAME}` and `${file:PATH}` in config values: substitution, its errors (with the position
 * and key path of every other config error), redaction in `GET /config`, and re-reading on
 * reload, from `parseConfig` up to the CLI and a running daemon.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError, formatConfigIssue } from '../../src/errors.ts';
import { diffConfig, loadConfigFile, parseConfig, redactConfig } from '../../src/config/load.ts';
import type { GatehouseConfig, HttpListenerConfig, ParseOptions } from '../../src/config/load.ts';
import { MAX_SECRET_FILE_BYTES, secretPaths } from '../../src/config/secrets.ts';
import { Daemon, runCli, tempDir, until } from '../helpers/daemon.ts';

const JWT_SECRET = 'secrets-test-jwt-0123456789abcdef-0123456789';
const ENV = { GH_PW: 'hunter2', GH_USER: 'svc', GH_EMPTY: '', GH_PORT: '8080', GH_TIMEOUT: '10s', GH_JWT: JWT_SECRET };

/** A config whose one custom actor has `options` (any keys, any strings): a place for any value. */
const withOptions = (options: string) => `actors: [ { name: a, module: ./a.ts, options: ${options} } ]`;
const options = (cfg: GatehouseConfig) => cfg.actors[0]!.options;

function parse(text: string, opts: ParseOptions = {}): GatehouseConfig {
  return parseConfig(text, 'gh.yaml', { baseDir: '/nonexistent', env: ENV, ...opts });
}

/** What `gatehouse check gh.yaml` would print for this text. */
function check(text: string, opts: ParseOptions = {}): string[] {
  try {
    parse(text, opts);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(formatConfigIssue);
    throw err;
  }
  return [];
}

describe('${env:NAME}', () => {
  test('a set variable fills the string; an empty one is allowed', () => {
    expect(options(parse(withOptions('{ pw: "${env:GH_PW}", none: "${env:GH_EMPTY}" }')))).toEqual({ pw: 'hunter2', none: '' });
  });

  test('an unset variable is an error at the value, with its key path', () => {
    expect(check(withOptions('{ pw: "${env:GH_NOPE}" }'))).toEqual([
      'gh.yaml:1:53 actors.0.options.pw: environment variable GH_NOPE is not set ("${env:GH_NOPE}")',
    ]);
  });

  test('the error points into a route list: listeners.0.routes.1.auth.jwt.secret', () => {
    const text = [
      'upstreams: [ { name: app, backends: ["127.0.0.1:9001"] } ]',
      'listeners:',
      '  - name: web',
      '    protocol: http',
      '    listen: 8080',
      '    routes:',
      '      - upstream: app',
      '      - upstream: app',
      '        match: { pathPrefix: /api }',
      '        auth:',
      '          jwt:',
      '            secret: "${env:GH_JWT_UNSET}"',
    ].join('\n');
    expect(check(text)).toEqual([
      'gh.yaml:12:21 listeners.0.routes.1.auth.jwt.secret: environment variable GH_JWT_UNSET is not set ("${env:GH_JWT_UNSET}")',
    ]);
    // Set, the same config is valid: the secret passes the HS256 length rule.
    const cfg = parse(text.replace('GH_JWT_UNSET', 'GH_JWT'));
    expect((cfg.listeners[0] as HttpListenerConfig).routes[1]!.auth!.jwt.secret).toBe(JWT_SECRET);
  });

  test('is read from process.env by default', () => {
    const name = `GH_SECRETS_TEST_${process.pid}`;
    process.env[name] = 'from-process';
    try {
      expect(options(parseConfig(withOptions(`{ v: "\${env:${name}}" }`), 'gh.yaml', { baseDir: '/x' }))).toEqual({ v: 'from-process' });
    } finally {
      delete process.env[name];
    }
  });

  test('a name that is not a variable name is an error', () => {
    expect(check(withOptions('{ v: "${env:A-B}" }'))).toEqual([
      'gh.yaml:1:52 actors.0.options.v: invalid environment variable name "A-B" in "${env:A-B}": use letters, digits and _',
    ]);
  });
});

describe('${file:PATH}', () => {
  test('relative to the config file, absolute, one trailing newline trimmed', async () => {
    using dir = tempDir();
    mkdirSync(path.join(dir.dir, 'secrets'));
    dir.write('secrets/one', 'one\n');
    dir.write('two', 'two\n\n');
    dir.write('crlf', 'three\r\n');
    dir.write('bare', 'four');
    const abs = path.join(dir.dir, 'bare');
    const file = dir.write('gh.yaml', withOptions(`{ a: "\${file:secrets/one}", b: "\${file:./two}", c: "\${file:crlf}", d: "\${file:${abs}}" }`));
    expect(options(await loadConfigFile(file))).toEqual({ a: 'one', b: 'two\n', c: 'three', d: 'four' });
  });

  test('a multi-line file (a PEM key) keeps its inner newlines', () => {
    using dir = tempDir();
    const pem = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----';
    dir.write('jwt.pub', `${pem}\n`);
    const cfg = parse(withOptions('{ key: "${file:jwt.pub}" }'), { baseDir: dir.dir });
    expect(options(cfg)).toEqual({ key: pem });
  });

  test('a missing file, a directory, a file over 1 MiB and a binary file are errors naming the path', () => {
    using dir = tempDir();
    mkdirSync(path.join(dir.dir, 'adir'));
    dir.write('big', 'x'.repeat(MAX_SECRET_FILE_BYTES + 1));
    writeFileSync(path.join(dir.dir, 'bin'), Buffer.from([0xff, 0xfe, 0x00, 0x80]));
    const p = (name: string) => path.join(dir.dir, name);
    expect(check(['actors:', '  - name: a', '    module: ./a.ts', '    options:',
      '      a: ${file:nope}', '      b: ${file:adir}', '      c: ${file:big}', '      d: ${file:bin}'].join('\n'), { baseDir: dir.dir })).toEqual([
      `gh.yaml:5:10 actors.0.options.a: cannot read secret file ${p('nope')}: no such file`,
      `gh.yaml:6:10 actors.0.options.b: cannot read secret file ${p('adir')}: is a directory`,
      `gh.yaml:7:10 actors.0.options.c: cannot read secret file ${p('big')}: larger than 1 MiB (${MAX_SECRET_FILE_BYTES + 1} bytes)`,
      `gh.yaml:8:10 actors.0.options.d: cannot read secret file ${p('bin')}: not UTF-8 text`,
    ]);
  });

  test('exactly 1 MiB is accepted', () => {
    using dir = tempDir();
    dir.write('max', 'x'.repeat(MAX_SECRET_FILE_BYTES));
    expect((options(parse(withOptions('{ v: "${file:max}" }'), { baseDir: dir.dir })).v as string).length).toBe(MAX_SECRET_FILE_BYTES);
  });

  test('an empty path is an error', () => {
    expect(check(withOptions('{ v: "${file:}" }'))).toEqual(['gh.yaml:1:52 actors.0.options.v: no file path in "${file:}"']);
  });

  test('a JWT secret from a file passes validation, and a short one fails without being shown', () => {
    using dir = tempDir();
    dir.write('jwt.key', `${JWT_SECRET}\n`);
    dir.write('short.key', 'tooshort-s3cr3t\n');
    const hub = (ref: string) => [
      'upstreams: [ { name: app, backends: ["127.0.0.1:9001"] } ]',
      'listeners:',
      '  - { name: web, protocol: http, listen: 8080, routes: [ { upstream: app, auth: { jwt: { secret: "' + ref + '" } } } ] }',
    ].join('\n');
    const cfg = parse(hub('${file:jwt.key}'), { baseDir: dir.dir });
    expect((cfg.listeners[0] as HttpListenerConfig).routes[0]!.auth!.jwt).toMatchObject({ secret: JWT_SECRET, algorithms: ['HS256'] });
    const errors = check(hub('${file:short.key}'), { baseDir: dir.dir });
    expect(errors).toEqual([expect.stringMatching(/^gh\.yaml:3:\d+ listeners\.0\.routes\.0\.auth\.jwt\.secret: too short for HS256: 15 bytes/)]);
    expect(errors.join('\n')).not.toContain('tooshort');
  });
});

describe('references in a string', () => {
  test('embedded, several per string, the same one twice', () => {
    expect(options(parse(withOptions('{ url: "redis://${env:GH_USER}:${env:GH_PW}@r:6379/${env:GH_PW}" }')))).toEqual({
      url: 'redis://svc:hunter2@r:6379/hunter2',
    });
  });

  test('$${ is a literal ${ and needs no variable; other $ signs are kept', () => {
    const cfg = parse(withOptions('{ a: "$${env:GH_NOPE}", b: "cost: $5, $$x, ${env:GH_USER}$${}" }'));
    expect(options(cfg)).toEqual({ a: '${env:GH_NOPE}', b: 'cost: $5, $$x, svc${}' });
    expect(secretPaths(cfg)).toEqual([['actors', 0, 'options', 'b']]);
  });

  test('an unknown scheme, a bare ${NAME} and an unterminated ${ are errors', () => {
    expect(check(['actors:', '  - name: a', '    module: ./a.ts', '    options:',
      '      a: "${foo:x}"', '      b: "${GH_PW}"', '      c: "pre ${env:GH_PW"'].join('\n'))).toEqual([
      'gh.yaml:5:10 actors.0.options.a: unknown reference scheme "foo" in "${foo:x}": use ${env:NAME} or ${file:PATH}, or write $${ for a literal ${',
      'gh.yaml:6:10 actors.0.options.b: "${GH_PW}" is not a reference: use ${env:NAME} or ${file:PATH}, or write $${ for a literal ${',
      'gh.yaml:7:10 actors.0.options.c: unterminated "${env:GH_PW": use ${env:NAME} or ${file:PATH}, or write $${ for a literal ${',
    ]);
  });

  test('a substituted value is not substituted again; keys and non-strings are left alone', () => {
    using dir = tempDir();
    dir.write('tmpl', '${env:GH_PW}');
    const cfg = parse(withOptions('{ a: "${file:tmpl}", "${env:GH_PW}": 1, n: 5, t: true }'), { baseDir: dir.dir });
    expect(options(cfg)).toEqual({ a: '${env:GH_PW}', '${env:GH_PW}': 1, n: 5, t: true });
  });

  test('a YAML anchor used twice is substituted, and redacted, at both places', () => {
    const cfg = parse(withOptions('{ a: &pw { p: "${env:GH_PW}" }, b: *pw }'));
    expect(options(cfg)).toEqual({ a: { p: 'hunter2' }, b: { p: 'hunter2' } });
    expect(redactConfig(cfg).actors[0]!.options).toEqual({ a: { p: '[redacted]' }, b: { p: '[redacted]' } });
  });

  test('keys that take strings (durations, listen addresses) take a reference; typed keys say to write them literally', () => {
    const cfg = parse('runtime: { shutdownTimeout: "${env:GH_TIMEOUT}" }\nadmin: { listen: "127.0.0.1:${env:GH_PORT}" }');
    expect(cfg.runtime.shutdownTimeout).toBe(10_000);
    expect(cfg.admin.listen).toMatchObject({ host: '127.0.0.1', port: 8080 });
    expect(check('runtime: { workers: "${env:GH_PORT}" }')).toEqual([
      'gh.yaml:1:21 runtime.workers: expected a number, got a string ("[redacted]") (a ${...} reference always gives a string: write this key literally)',
    ]);
  });

  test('an error about a substituted value does not repeat it', () => {
    const errors = check('log: { level: "${env:GH_PW}" }\nadmin: { listen: "0.0.0.0:${env:GH_PORT}" }');
    expect(errors).toEqual([
      'gh.yaml:1:15 log.level: expected one of fatal, error, warn, info, debug, trace, silent, got a string ("[redacted]")',
      expect.stringMatching(/^gh\.yaml:2:18 admin\.listen: \[redacted\] is not a loopback address: /),
    ]);
    expect(errors.join('\n')).not.toMatch(/hunter2|8080/);
  });

  test('a failed reference is the only problem reported for its value, others are still reported', () => {
    expect(check('admin: { listen: "${env:GH_NOPE}" }\nlog: { level: loud }')).toEqual([
      'gh.yaml:1:18 admin.listen: environment variable GH_NOPE is not set ("${env:GH_NOPE}")',
      'gh.yaml:2:15 log.level: expected one of fatal, error, warn, info, debug, trace, silent, got a string ("loud")',
    ]);
  });
});

describe('redactConfig and diffConfig with references', () => {
  const text = [
    'admin: { listen: 9901, token: "${env:GH_PW}" }',
    'cluster: { redis: "redis://${env:GH_USER}:${env:GH_PW}@r:6379/0", instanceId: "gw-${env:GH_USER}" }',
    withOptions('{ apiKey: "${env:GH_PW}", plain: "kept", password: literal }'),
  ].join('\n');
  const cfg = parse(text);

  test('every substituted value is redacted whole, embedded or not; key-name secrets still are', () => {
    const r = redactConfig(cfg);
    expect(r.admin.token).toBe('[redacted]');
    expect(r.cluster).toEqual({ redis: '[redacted]', instanceId: '[redacted]', keyPrefix: 'gatehouse:', heartbeat: 5_000, deadAfter: 15_000 });
    expect(r.actors[0]!.options).toEqual({ apiKey: '[redacted]', plain: 'kept', password: '[redacted]' });
    expect(JSON.stringify(r)).not.toMatch(/hunter2|svc/);
    expect(cfg.cluster?.instanceId).toBe('gw-svc');
  });

  test('the record of substituted paths survives a spread copy (as a reload makes) and stays out of JSON and keys', () => {
    const copy = { ...cfg, admin: { ...cfg.admin } };
    expect(redactConfig(copy).cluster?.redis).toBe('[redacted]');
    expect(JSON.stringify(cfg)).not.toContain('secretPaths');
    expect(Object.keys(cfg).sort()).toEqual(['actors', 'admin', 'cluster', 'listeners', 'log', 'runtime', 'upstreams']);
  });

  test('diffConfig sees a rotated secret as a change, and nothing when it is the same', () => {
    expect(diffConfig(cfg, parse(text))).toEqual({ added: [], removed: [], changed: [] });
    const rotated = parse(text, { env: { ...ENV, GH_PW: 'rotated' } });
    expect(diffConfig(cfg, rotated)).toEqual({ added: [], removed: [], changed: ['admin', 'cluster', 'actor:a'] });
  });

  test('a config without references is unchanged: no record at all', () => {
    const plain = parse(withOptions('{ a: b }'));
    expect(Object.getOwnPropertySymbols(plain)).toEqual([]);
    expect(secretPaths(plain)).toEqual([]);
  });
});

describe('reload and the CLI', () => {
  test('loadConfigFile reads the secret file again each time: rotate, reload, the new value', async () => {
    using dir = tempDir();
    dir.write('key', 'v1\n');
    const file = dir.write('gh.yaml', withOptions('{ key: "${file:key}" }'));
    expect(options(await loadConfigFile(file))).toEqual({ key: 'v1' });
    dir.write('key', 'v2\n');
    expect(options(await loadConfigFile(file))).toEqual({ key: 'v2' });
  });

  test('gatehouse check names an unset variable as FILE:LINE:COL key.path and exits 1', async () => {
    using dir = tempDir();
    const file = dir.write('gh.yaml', ['log:', '  level: info', 'admin:', '  token: "${env:GH_SECRETS_TEST_UNSET_VARIABLE}"', ''].join('\n'));
    const r = await runCli(['check', '--config', file]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${file}:4:10 admin.token: environment variable GH_SECRETS_TEST_UNSET_VARIABLE is not set`);
  });

  test('gatehouse check accepts a secret from a file next to the config', async () => {
    using dir = tempDir();
    dir.write('admin.token', 'a-long-admin-token\n');
    const file = dir.write('gh.yaml', 'admin: { token: "${file:admin.token}" }\n');
    const r = await runCli(['check', '--config', file]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  });
});

describe('a running daemon', () => {
  test('applies a secret file, rotates it on POST /reload, keeps it out of GET /config, refuses a reload without it', async () => {
    const seen: (string | undefined)[] = [];
    const backend = http.createServer((req, res) => {
      seen.push(req.headers['x-api-key'] as string | undefined);
      res.end('ok');
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    try {
      using dir = tempDir();
      dir.write('api-key', 'key-one\n');
      const file = dir.write('gh.yaml', [
        'admin: { listen: "127.0.0.1:0" }',
        'runtime: { workers: 1, shutdownTimeout: 5s }',
        `upstreams: [ { name: app, backends: [ "127.0.0.1:${(backend.address() as AddressInfo).port}" ] } ]`,
        'listeners:',
        '  - name: web',
        '    protocol: http',
        '    listen: "127.0.0.1:0"',
        '    routes: [ { upstream: app, headers: { request: { set: { X-Api-Key: "${file:api-key}" } } } } ]',
        '',
      ].join('\n'));
      await using gh = await Daemon.start(file);
      const get = async (): Promise<void> => {
        const res = await fetchOnce(gh.port('web'));
        expect(res).toBe(200);
      };
      const routeHeaders = async () => {
        const c = await gh.json<{ listeners: { routes: { headers: unknown }[] }[] }>('/config');
        return c.listeners[0]!.routes[0]!.headers;
      };

      await get();
      expect(seen).toEqual(['key-one']);
      expect(await routeHeaders()).toEqual({ request: { set: { 'X-Api-Key': '[redacted]' } } });

      dir.write('api-key', 'key-two\n');
      expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
      await until(async () => {
        await get();
        return seen.at(-1) === 'key-two';
      }, 10_000, 'the rotated key reaches the backend');
      expect(await routeHeaders()).toEqual({ request: { set: { 'X-Api-Key': '[redacted]' } } });

      rmSync(path.join(dir.dir, 'api-key'));
      const refused = await gh.admin('/reload', { method: 'POST' });
      expect(refused.status).toBe(400);
      expect(await refused.text()).toContain(`${file}:8:`);
      await get();
      expect(seen.at(-1)).toBe('key-two');
      expect(await gh.stop()).toBe(0);
    } finally {
      backend.close();
      backend.closeAllConnections();
      await once(backend, 'close');
    }
  });
});

/** One GET on its own connection (closed after); resolves with the status. */
async function fetchOnce(port: number): Promise<number> {
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { connection: 'close' } });
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  res.resume();
  await once(res, 'end');
  return res.statusCode ?? 0;
}
