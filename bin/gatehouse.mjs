#!/usr/bin/env -S node --max-semi-space-size=4
// The CLI entry. Gatehouse runs its TypeScript sources directly on Node.js 24 (type stripping),
// so there is no build step; this shim refuses older Node versions with a clear message.
//
// The shebang's flags are DAEMON_NODE_FLAGS (src/daemon/node-flags.ts: why, and where else they
// go): they cap the main thread's young generation, which V8 reads only at process start. Run
// through `node bin/gatehouse.mjs`, pass them yourself: `node --max-semi-space-size=4 bin/gatehouse.mjs start`.
//
// `gatehouse start` handles SIGTERM, SIGINT and SIGHUP from this first line on: loading the
// daemon's modules takes a while, and until the daemon takes the signals over they are queued
// here, so that a signal during start-up never gets Node's default action (an exit with no drain
// and no log line). A second SIGTERM or SIGINT exits at once. Other commands keep the default.
const queued = [];
let deliver;
let stops = 0;
if (process.argv[2] === 'start') {
  for (const name of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(name, (signal) => {
      if (deliver) return deliver(signal);
      if (signal !== 'SIGHUP' && ++stops > 1) {
        process.stderr.write(`gatehouse: second ${signal} during start-up: exiting at once\n`);
        process.exit(1);
      }
      queued.push(signal);
    });
  }
}
// Tests send signals from this moment on (the earliest one JavaScript can handle).
if (process.env.GATEHOUSE_TEST_STARTUP_MARK === '1') process.stderr.write('gatehouse: signal handlers installed\n');

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `gatehouse needs Node.js 24 or newer (this is ${process.version}).\n` +
      'Run it through npm (npm start), which uses the node@24 devDependency, or install Node 24.\n',
  );
  process.exit(1);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2), {
  signals: (handler) => {
    deliver = handler;
    for (const signal of queued.splice(0)) handler(signal);
  },
});
