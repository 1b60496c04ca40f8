#!/usr/bin/env node
// The CLI entry. Gatehouse runs its TypeScript sources directly on Node.js 24 (type stripping),
// so there is no build step; this shim only refuses older Node versions with a clear message.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `gatehouse needs Node.js 24 or newer (this is ${process.version}).\n` +
      'Run it through npm (npm start), which uses the node@24 devDependency, or install Node 24.\n',
  );
  process.exit(1);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
