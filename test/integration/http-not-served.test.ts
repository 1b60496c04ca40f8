import { writeFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { Daemon, runCli, tempDir } from '../helpers/daemon.ts';
import { roundTrip, startEchoServer } from '../helpers/net.ts';

// HTTP listeners are in the schema but not served yet: a config with one must never start a
// daemon that silently drops that listener's traffic.
const tcpOnly = (echo: number) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1 }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners:
  - { name: one, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
`;
const withHttp = (echo: number) => `${tcpOnly(echo)}  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { upstream: app } ]
`;
const REFUSAL = 'listeners.1.protocol: HTTP listeners are not served by this version yet';

test('check and start refuse a protocol: http listener with its file, line and key path', async () => {
  await using echo = await startEchoServer();
  using dir = tempDir();
  const file = dir.write('gh.yaml', withHttp(echo.port));
  const check = await runCli(['check', '--config', file]);
  expect(check.code).toBe(1);
  expect(check.stderr).toContain(`${file}:7:15 ${REFUSAL}`);
  const start = await runCli(['start', '--config', file]);
  expect(start.code).toBe(1);
  expect(start.stderr).toContain(`${file}:7:15 ${REFUSAL}`);
});

test('a reload that adds one is refused and the running listeners keep serving', async () => {
  await using echo = await startEchoServer();
  using dir = tempDir();
  const file = dir.write('gh.yaml', tcpOnly(echo.port));
  await using gh = await Daemon.start(file);
  writeFileSync(file, withHttp(echo.port));
  gh.child.kill('SIGHUP');
  const refused = await gh.waitForLog((l) => l.msg === 'reload refused: the running config stays');
  expect(String(refused.errors)).toContain(REFUSAL);
  expect(await roundTrip(gh.port('one'), 'still here')).toBe('still here');
});
