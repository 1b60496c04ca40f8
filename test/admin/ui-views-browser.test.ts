/**
 * The debug UI's operator views in a real browser (Debian's chromium, headless, playwright-core)
 * against a real daemon started from the CLI in debug mode: the header and listeners, the details
 * panel, the event log's filters and pause, the incident list, the Top view, and an accessibility
 * check of the page. Screenshots go to `test-artifacts/` (not committed).
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`); without it the file fails, it does
 * not skip.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { Daemon, ROOT, tempDir, until } from '../helpers/daemon.ts';
import { startKillableEcho, type KillableEcho } from '../helpers/backends.ts';
import { refusedPort } from '../helpers/ports.ts';
import { connect } from '../helpers/net.ts';

const CHROMIUM = '/usr/bin/chromium';
const ADMIN_TOKEN = 'ui-views-admin-token-0123456789';
const WAIT_MS = 15_000;
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

interface PageElement {
  textContent: string | null;
}
declare const document: { querySelectorAll(selector: string): ArrayLike<PageElement> };

/** What the elements matching `selector` show now (trimmed text). */
function texts(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (els) => (els as unknown as PageElement[]).map((e) => (e.textContent ?? '').trim()));
}

/** Waits until `pred` holds for the texts of `selector`; on the deadline fails with what the page shows. */
async function waitTexts(page: Page, selector: string, pred: (t: string[]) => boolean, what: string): Promise<string[]> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const t = await texts(page, selector);
    if (pred(t)) return t;
    if (Date.now() > deadline) throw new Error(`${what}: ${selector} shows ${JSON.stringify(t.slice(-30))}`);
    await page.waitForTimeout(50);
  }
}

interface Node {
  id: string;
  type: string;
  peer?: string;
  children: Node[];
}
const walk = (n: Node): Node[] => [n, ...n.children.flatMap(walk)];

describe('debug UI views in a real browser (chromium, playwright-core)', () => {
  const stack = new AsyncDisposableStack();
  let backend: KillableEcho;
  let dead: number;
  let daemon: Daemon;
  let configFile: string;
  let browser: Browser;
  const auth = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`the browser test needs Debian's chromium at ${CHROMIUM}: run \`apt-get install -y chromium\``);
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = stack.use(await startKillableEcho());
    dead = await refusedPort();
    const dir = stack.use(tempDir());
    // Two probes every 100 ms: the event noise an operator sees (one of them always failing).
    configFile = dir.write(
      'gatehouse.yaml',
      `admin: { listen: "127.0.0.1:0", token: ${ADMIN_TOKEN} }
runtime: { workers: 1, shutdownTimeout: 2s, debug: true }
log: { level: info }
upstreams:
  - name: app
    backends: [ ${backend.address}, "127.0.0.1:${dead}" ]
    healthCheck: { type: tcp, interval: 100ms, timeout: 100ms }
listeners:
  - name: tcp-in
    protocol: tcp
    listen: 127.0.0.1:0
    upstream: app
`,
    );
    daemon = stack.use(await Daemon.start(configFile));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    stack.defer(() => browser.close());
  });

  afterAll(async () => {
    await stack.disposeAsync();
  });

  async function openUi(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    expect((await page.goto(`${daemon.adminUrl}/?token=${ADMIN_TOKEN}`))?.status()).toBe(200);
    return { context, page };
  }

  /** A client connection through tcp-in and its actor id. */
  async function client(): Promise<Awaited<ReturnType<typeof connect>> & { id: string; peer: string }> {
    const c = await connect(daemon.port('tcp-in'));
    const peer = `127.0.0.1:${c.socket.localPort}`;
    const node = await until(async () => walk(await daemon.json<Node>('/actors', auth)).find((n) => n.peer === peer), WAIT_MS, `the connection of ${peer} in /actors`);
    return { ...c, id: node!.id, peer };
  }

  test('the header tells version, uptime, config file and debug; listeners show address and live connections', async () => {
    const { context, page } = await openUi();
    try {
      await waitTexts(page, '#debug', (t) => t[0] === 'on', 'debug on');
      expect((await texts(page, '#version'))[0]).toMatch(/^v\d+\.\d+\.\d+/);
      expect(await texts(page, '#config-file')).toEqual([configFile]);
      await waitTexts(page, '#uptime', (t) => /^(\d+m )?\d+s$/.test(t[0] ?? ''), 'the uptime');
      const port = daemon.port('tcp-in');
      await waitTexts(page, '#listeners td', (t) => t.join('|') === `tcp-in|tcp|127.0.0.1:${port}|0`, 'no connection yet');
      const a = await client();
      const b = await client();
      try {
        await waitTexts(page, '#listeners td', (t) => t.join('|') === `tcp-in|tcp|127.0.0.1:${port}|2`, 'two connections');
        await waitTexts(page, '#rates .rate', (t) => t.length === 3, 'three sparklines');
        expect(await page.locator('#rates svg[role="img"]').count()).toBe(3);
        await page.screenshot({ path: path.join(ARTIFACTS, 'ui-overview.png'), fullPage: true });
      } finally {
        await a.close();
        await b.close();
      }
      await waitTexts(page, '#listeners td', (t) => t[3] === '0', 'the connections gone');
    } finally {
      await context.close();
    }
  });

  test('clicking a connection shows its peer, backend and bytes, refreshed live; a probe shows its last error', async () => {
    const { context, page } = await openUi();
    const c = await client();
    try {
      await c.send('x'.repeat(1000));
      await page.getByRole('button', { name: c.id, exact: true }).first().click();
      await waitTexts(page, '#details .f-peer', (t) => t[0] === c.peer, 'the peer');
      expect(await texts(page, '#details .f-backend')).toEqual([backend.address]);
      expect(await texts(page, '#details .f-type')).toEqual(['connection']);
      await waitTexts(page, '#details .f-bytesIn', (t) => t[0] === '1000 B (1000)', 'the bytes in');
      // Live: more bytes show without another click.
      await c.send('y'.repeat(4096));
      await waitTexts(page, '#details .f-bytesIn', (t) => t[0] === '5.0 KiB (5096)', 'the bytes in after more data');
      await waitTexts(page, '#details .f-bytesOut', (t) => t[0] === '5.0 KiB (5096)', 'the echoed bytes out');
      expect((await texts(page, '#details .f-ageMs'))[0]).toMatch(/^\d+s$/);
      await page.screenshot({ path: path.join(ARTIFACTS, 'ui-details-connection.png'), fullPage: true });

      await page.getByRole('button', { name: `probe:app/127.0.0.1:${dead}`, exact: true }).click();
      await waitTexts(page, '#details .f-lastError', (t) => /ECONNREFUSED/.test(t[0] ?? ''), 'the probe\'s last error');
      await page.getByRole('button', { name: `breaker:app/127.0.0.1:${dead}`, exact: true }).click();
      await waitTexts(page, '#details .f-failures', (t) => /^\d+$/.test(t[0] ?? ''), 'the breaker\'s failure count');
    } finally {
      await c.close();
      await context.close();
    }
  });

  test('event filters hide the probes and a kind; pause holds events and shows them on resume', async () => {
    const { context, page } = await openUi();
    try {
      await waitTexts(page, '#log div', (t) => t.filter((l) => l.includes('healthProbe')).length >= 5, 'probe events flooding in');
      await page.getByLabel('hide types').fill('healthProbe');
      expect((await texts(page, '#log div')).filter((l) => l.includes('healthProbe'))).toEqual([]);
      const c1 = await client();
      await c1.close();
      await waitTexts(page, '#log div', (t) => t.some((l) => new RegExp(` down +\\[0\\] ${c1.id} connection normal$`).test(l)), 'the connection\'s down');
      // Probes kept firing meanwhile (twenty events a second): none is shown.
      expect((await texts(page, '#log div')).filter((l) => l.includes('healthProbe'))).toEqual([]);
      await page.getByLabel('state').uncheck();
      expect((await texts(page, '#log div')).filter((l) => / state +/.test(l))).toEqual([]);
      expect((await texts(page, '#log div')).some((l) => l.includes(`spawned [0] ${c1.id} connection`))).toBe(true);

      await page.getByRole('button', { name: 'Pause' }).click();
      expect(await page.getByRole('button', { name: 'Resume' }).getAttribute('aria-pressed')).toBe('true');
      const c2 = await client();
      await c2.close();
      const held = await waitTexts(page, '#held', (t) => Number(/^(\d+) held$/.exec(t[0] ?? '')?.[1]) >= 2, 'events held while paused');
      expect((await texts(page, '#log div')).some((l) => l.includes(c2.id))).toBe(false);
      await page.screenshot({ path: path.join(ARTIFACTS, 'ui-events-paused.png'), fullPage: true });
      await page.getByRole('button', { name: 'Resume' }).click();
      const shown = await texts(page, '#log div');
      expect(shown.some((l) => l.includes(`spawned [0] ${c2.id} connection`))).toBe(true);
      expect(shown.some((l) => new RegExp(` down +\\[0\\] ${c2.id} connection normal$`).test(l))).toBe(true);
      expect((await texts(page, '#held'))[0]).toMatch(new RegExp(`^\\d+ shown after the pause$`));
      expect(Number(/^(\d+)/.exec((await texts(page, '#held'))[0]!)![1])).toBeGreaterThanOrEqual(Number(/^(\d+)/.exec(held[0]!)![1]));
    } finally {
      await context.close();
    }
  });

  test('Top by bytes lists the busy connection first', async () => {
    const { context, page } = await openUi();
    const busy = await client();
    const idle = await client();
    let pumping = true;
    const pump = (async () => {
      const chunk = 'z'.repeat(16_384);
      while (pumping) await busy.send(chunk);
    })();
    try {
      await idle.send('hello');
      await page.getByLabel('by').selectOption('bytes');
      await page.getByLabel('window').selectOption('1s');
      await page.getByRole('button', { name: 'Sample' }).click();
      const rows = await waitTexts(page, '#top td:first-child', (t) => t.length > 0, 'the top rows');
      expect(rows[0]).toBe(busy.id);
      const first = await page.locator('#top tr').nth(1).locator('td').allTextContents();
      expect(first[1]).toBe('connection');
      expect(first[4]).toBe(busy.peer);
      expect(first[5]).toBe(backend.address);
      await page.screenshot({ path: path.join(ARTIFACTS, 'ui-top.png'), fullPage: true });
    } finally {
      pumping = false;
      await pump;
      await busy.close();
      await idle.close();
      await context.close();
    }
  });

  test('accessibility: landmarks, headed regions, named controls, images with text, readable contrast', async () => {
    const { context, page } = await openUi();
    try {
      await waitTexts(page, '#tree button.id', (t) => t.includes('listener:tcp-in'), 'the tree');
      await waitTexts(page, '#rates .rate', (t) => t.length === 3, 'the rates');
      const problems = await page.evaluate(() => {
        const d = (globalThis as any).document;
        const getComputedStyle = (globalThis as any).getComputedStyle as (e: unknown) => { color: string; backgroundColor: string };
        const out: string[] = [];
        const text = (e: any): string => (e?.textContent ?? '').trim();
        const nameOf = (e: any): string => {
          if (e.getAttribute('aria-label')) return e.getAttribute('aria-label');
          const by = e.getAttribute('aria-labelledby');
          if (by) return by.split(' ').map((id: string) => text(d.getElementById(id))).join(' ').trim();
          if (e.id && d.querySelector(`label[for="${e.id}"]`)) return text(d.querySelector(`label[for="${e.id}"]`));
          if (e.closest('label')) return text(e.closest('label'));
          if (e.tagName === 'BUTTON') return text(e) || e.getAttribute('title') || '';
          return e.getAttribute('title') || '';
        };
        if (!d.querySelector('header')) out.push('no banner (header)');
        if (d.querySelectorAll('main').length !== 1) out.push('not exactly one main');
        if (!d.documentElement.lang) out.push('no lang on <html>');
        for (const s of d.querySelectorAll('section')) if (!s.getAttribute('aria-labelledby') || !text(d.getElementById(s.getAttribute('aria-labelledby')))) out.push(`section without a heading: ${s.id}`);
        for (const e of d.querySelectorAll('button, input, select, textarea')) if (!nameOf(e)) out.push(`unnamed ${e.tagName.toLowerCase()} ${e.id || e.className}`);
        for (const e of d.querySelectorAll('[onclick]')) if (e.tagName !== 'BUTTON') out.push(`clickable ${e.tagName} that is not a button`);
        for (const img of d.querySelectorAll('img')) if (!img.hasAttribute('alt')) out.push(`img without alt: ${img.src}`);
        for (const svg of d.querySelectorAll('svg')) if (svg.getAttribute('aria-hidden') !== 'true' && !(svg.getAttribute('role') === 'img' && svg.getAttribute('aria-label'))) out.push('svg without role=img and a label');
        // WCAG contrast of text against the page background (4.5:1 for normal text).
        const rgb = (c: string): number[] => (c.match(/[\d.]+/g) ?? []).slice(0, 3).map(Number);
        const lum = (c: number[]): number => {
          const [r, g, b] = c.map((v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
          return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
        };
        const bg = lum(rgb(getComputedStyle(d.body).backgroundColor));
        const seen = new Set<string>();
        for (const e of d.querySelectorAll('body *')) {
          if (!text(e) || e.closest('#incidents, #log .incident, svg, li.selected') || e.children.length) continue;
          const color = getComputedStyle(e).color;
          if (seen.has(color)) continue;
          seen.add(color);
          const l = lum(rgb(color));
          const ratio = (Math.max(l, bg) + 0.05) / (Math.min(l, bg) + 0.05);
          if (ratio < 4.5) out.push(`contrast ${ratio.toFixed(2)} of ${color} (${e.tagName}.${e.className})`);
        }
        return out;
      });
      expect(problems).toEqual([]);
      // The main views are reachable as landmarks and named regions.
      expect(await page.getByRole('banner').count()).toBe(1);
      expect(await page.getByRole('main').count()).toBe(1);
      for (const name of ['Actors', 'Details', 'Listeners', 'Rates', 'Upstreams', 'Events', 'Top']) expect(await page.getByRole('region', { name, exact: true }).count(), name).toBe(1);
      expect(await page.getByRole('log', { name: 'event log' }).count()).toBe(1);
    } finally {
      await context.close();
    }
  });

  // Last: it crashes the only shard.
  test('a shard crash stays in the incident list after 50 probe events', async () => {
    const { context, page } = await openUi();
    try {
      await waitTexts(page, '#log div', (t) => t.some((l) => l.includes('healthProbe')), 'the event log live');
      const r = await daemon.admin('/debug/shards/0/crash', { method: 'POST', ...auth });
      expect(r.status).toBe(202);
      await r.body?.cancel();
      const incidents = await waitTexts(page, '#incidents li', (t) => t.some((l) => / down +shard-0 shard error/.test(l)) && t.some((l) => / restart +shard-0 shard restarts=1/.test(l)), 'the crash and restart as incidents');
      // Newest first: the restart came after the down.
      expect(incidents.findIndex((l) => l.includes('restart'))).toBeLessThan(incidents.findIndex((l) => / down +shard-0/.test(l)));
      const probeLines = (t: string[]): number => t.filter((l) => l.includes('healthProbe')).length;
      const before = probeLines(await texts(page, '#log div'));
      await waitTexts(page, '#log div', (t) => probeLines(t) >= before + 50, '50 more probe events');
      expect((await texts(page, '#incidents li')).some((l) => / down +shard-0 shard error/.test(l))).toBe(true);
      expect(await page.locator('#incidents li.ev-down').count()).toBeGreaterThanOrEqual(1);
      await page.screenshot({ path: path.join(ARTIFACTS, 'ui-incidents.png'), fullPage: true });
      await until(async () => (await daemon.json<{ ready?: boolean }>('/readyz')).ready === true, WAIT_MS, 'the shard back');
    } finally {
      await context.close();
    }
  });
});
