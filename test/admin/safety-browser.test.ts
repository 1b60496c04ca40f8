/**
 * The admin API against real web pages: Debian's chromium, headless, driven by playwright-core,
 * and a real daemon from the CLI in debug mode without a token (the most exposed setup). A page
 * of another origin (a tiny server on port 0) and a DNS-rebinding page (chromium maps
 * `rebind.test` to 127.0.0.1) try to drain the daemon and crash its shard; the daemon keeps
 * serving and logs each refusal. The debug UI keeps working from its own origin.
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`); without it the file fails, it does
 * not skip.
 */
import http from 'node:http';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { Daemon, tempDir, type LogLine } from '../helpers/daemon.ts';

const CHROMIUM = '/usr/bin/chromium';
const WAIT_MS = 15_000;

// The page functions below run in the browser; the project's lib has no DOM, so declare the bits they use.
declare const document: { querySelectorAll(selector: string): ArrayLike<{ textContent: string | null }> };
declare class EventSource {
  constructor(url: string);
  onopen: (() => void) | null;
  onerror: (() => void) | null;
  readyState: number;
  close(): void;
}

const refusals = (d: Daemon): LogLine[] => d.logs.filter((l) => l.msg === 'admin request refused: foreign host or origin');

describe('admin API against web pages (chromium)', () => {
  const stack = new AsyncDisposableStack();
  let daemon: Daemon;
  let browser: Browser;
  let evilOrigin: string;
  let adminPort: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`the browser test needs Debian's chromium at ${CHROMIUM}: run \`apt-get install -y chromium\` (.ci/run does it in CI)`);
    }
    const dir = stack.use(tempDir());
    const file = dir.write('gh.yaml', 'admin: { listen: "127.0.0.1:0" }\nruntime: { workers: 1, shutdownTimeout: 2s, debug: true }\nlog: { level: info }\n');
    daemon = stack.use(await Daemon.start(file));
    adminPort = new URL(daemon.adminUrl).port;

    // Another site: any page the operator might have open.
    const sockets = new Set<net.Socket>();
    const evil = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>not the admin</title><p>hello</p>');
    });
    evil.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    evil.listen(0, '127.0.0.1');
    await once(evil, 'listening');
    evilOrigin = `http://127.0.0.1:${(evil.address() as net.AddressInfo).port}`;
    stack.defer(async () => {
      for (const s of sockets) s.destroy();
      evil.close();
      await once(evil, 'close');
    });

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--host-resolver-rules=MAP rebind.test 127.0.0.1'] });
    stack.defer(() => browser.close());
  });

  afterAll(() => stack.disposeAsync());

  async function expectStillServing(): Promise<void> {
    const ready = await daemon.admin('/readyz');
    expect(ready.status).toBe(200);
    await ready.body?.cancel();
    expect(daemon.logs.filter((l) => ['drain requested', 'shard crash injected', 'shard down'].includes(l.msg))).toEqual([]);
  }

  test('a page of another origin POSTs /drain and a shard crash in no-cors mode: both refused, the daemon keeps serving', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      expect((await page.goto(`${evilOrigin}/`))?.status()).toBe(200);
      // no-cors: the page cannot read the answer, but the request is sent, which was the hole.
      const sent = await page.evaluate(async (admin) => {
        const out: string[] = [];
        for (const path of ['/drain', '/debug/shards/0/crash']) {
          const r = await fetch(admin + path, { method: 'POST', mode: 'no-cors' });
          out.push(r.type);
        }
        return out;
      }, daemon.adminUrl);
      expect(sent).toEqual(['opaque', 'opaque']);
      await expect.poll(() => refusals(daemon).map((l) => l.req), { timeout: WAIT_MS }).toEqual(expect.arrayContaining([
        { method: 'POST', path: '/drain', host: `127.0.0.1:${adminPort}`, origin: evilOrigin },
        { method: 'POST', path: '/debug/shards/0/crash', host: `127.0.0.1:${adminPort}`, origin: evilOrigin },
      ]));
      expect(refusals(daemon)).toContainEqual(expect.objectContaining({ code: 'origin_not_allowed', remoteAddress: '127.0.0.1', actorType: 'admin' }));
      await expectStillServing();
    } finally {
      await context.close();
    }
  });

  test('a page of another origin cannot open the actor event stream either', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${evilOrigin}/`);
      const state = await page.evaluate(
        (admin) =>
          new Promise<string>((resolve) => {
            const es = new EventSource(`${admin}/actors/events`);
            es.onopen = () => (es.close(), resolve('open'));
            es.onerror = () => (es.close(), resolve('error'));
          }),
        daemon.adminUrl,
      );
      expect(state).toBe('error');
      expect(refusals(daemon).map((l) => l.req)).toContainEqual({ method: 'GET', path: '/actors/events', host: `127.0.0.1:${adminPort}`, origin: evilOrigin });
    } finally {
      await context.close();
    }
  });

  test('DNS rebinding: a page whose name now resolves to 127.0.0.1 gets 403 for the UI and for a same-origin POST', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const rebound = `http://rebind.test:${adminPort}`;
      expect((await page.goto(`${rebound}/`))?.status()).toBe(403);
      // The page is now same-origin with the admin API as far as the browser knows.
      const status = await page.evaluate(async () => (await fetch('/drain', { method: 'POST' })).status);
      expect(status).toBe(403);
      expect(refusals(daemon)).toContainEqual(expect.objectContaining({
        code: 'host_not_allowed', req: { method: 'POST', path: '/drain', host: `rebind.test:${adminPort}`, origin: rebound },
      }));
      await expectStillServing();
    } finally {
      await context.close();
    }
  });

  test('the debug UI on its own origin still works: tree, same-origin POST, event stream', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const before = refusals(daemon).length;
      expect((await page.goto(`${daemon.adminUrl}/`))?.status()).toBe(200);
      await page.waitForFunction(() => Array.from(document.querySelectorAll('#tree .id'), (e) => (e.textContent ?? '').trim()).includes('shard-0'), undefined, { timeout: WAIT_MS, polling: 50 });
      const answers = await page.evaluate(async () => {
        // Chromium sends Origin on a same-origin POST: it must pass.
        const crash = await fetch('/debug/shards/9/crash', { method: 'POST' });
        const events = await new Promise<string>((resolve) => {
          const es = new EventSource('/actors/events');
          es.onopen = () => (es.close(), resolve('open'));
          es.onerror = () => (es.close(), resolve('error'));
        });
        return { crash: crash.status, code: ((await crash.json()) as { error: { code: string } }).error.code, events };
      });
      expect(answers).toEqual({ crash: 404, code: 'no_such_shard', events: 'open' });
      expect(refusals(daemon)).toHaveLength(before);
      expect(await page.locator('#error').innerText()).toBe('');
      await expectStillServing();
    } finally {
      await context.close();
    }
  });
});
