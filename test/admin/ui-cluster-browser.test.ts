/**
 * The debug UI's Cluster panel in a real browser (Debian's chromium, headless, playwright-core)
 * against two daemons in cluster mode on a private Redis, and one without cluster mode (no
 * panel). Screenshots go to `test-artifacts/` (not committed).
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`); without it the file fails, it does
 * not skip.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { chromium, type Page } from 'playwright-core';
import { Daemon, ROOT, tempDir } from '../helpers/daemon.ts';
import { RedisServer } from '../helpers/redis.ts';

const CHROMIUM = '/usr/bin/chromium';
const WAIT_MS = 15_000;
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

interface PageElement {
  textContent: string | null;
}

/** Waits until `pred` holds for the trimmed texts of `selector`; on the deadline fails with what the page shows. */
async function waitTexts(page: Page, selector: string, pred: (t: string[]) => boolean, what: string): Promise<string[]> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const t = await page.$$eval(selector, (els) => (els as unknown as PageElement[]).map((e) => (e.textContent ?? '').trim()));
    if (pred(t)) return t;
    if (Date.now() > deadline) throw new Error(`${what}: ${selector} shows ${JSON.stringify(t)}`);
    await page.waitForTimeout(50);
  }
}

const config = (cluster: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
${cluster}
`;

describe('debug UI: the cluster panel (chromium, playwright-core)', () => {
  test('shows Redis up, the instances with their last heartbeat and this one marked; Redis down; hidden without cluster mode', async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`the browser test needs Debian's chromium at ${CHROMIUM}: run \`apt-get install -y chromium\``);
    mkdirSync(ARTIFACTS, { recursive: true });
    await using redis = await RedisServer.start();
    using dir = tempDir();
    const prefix = `ui${process.pid}-${Date.now()}:`;
    const cluster = (id: string) => `cluster: { redis: "${redis.url}", instanceId: ${id}, keyPrefix: "${prefix}", heartbeat: 200ms, deadAfter: 1s }`;
    await using a = await Daemon.start(dir.write('a.yaml', config(cluster('gw-a'))));
    await using _b = await Daemon.start(dir.write('b.yaml', config(cluster('gw-b'))));
    await using plain = await Daemon.start(dir.write('plain.yaml', config('')));
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
      expect((await page.goto(`${a.adminUrl}/`))?.status()).toBe(200);
      await waitTexts(page, '#cluster .counters span', (t) => t.join('|') === `redis|up|instance gw-a|prefix ${prefix}`, 'redis up');
      const rows = await waitTexts(page, '#cluster td:first-child', (t) => t.length === 2, 'two instances');
      expect(rows.sort()).toEqual(['gw-a (this one)', 'gw-b']);
      expect(await page.locator('#cluster tr[aria-current="true"] td').first().textContent()).toBe('gw-a (this one)');
      // The last heartbeat, as a time and as an age of a heartbeat or so.
      await waitTexts(page, '#cluster td:nth-child(3)', (t) => t.length === 2 && t.every((s) => /^\d+s$/.test(s) && Number.parseInt(s) <= 2), 'fresh heartbeats');
      expect(await page.getByRole('heading', { name: 'Cluster' }).isVisible()).toBe(true);
      await page.screenshot({ path: path.join(ARTIFACTS, 'ui-cluster.png'), fullPage: true });

      // Redis stops: the panel says down, and lists this instance alone.
      await redis.stop();
      await waitTexts(page, '#cluster .counters span', (t) => t[1] === 'down', 'redis down');
      await waitTexts(page, '#cluster td:first-child', (t) => t.join() === 'gw-a (this one)', 'this instance alone');
      expect(await page.locator('#cluster .counters .no').textContent()).toBe('down');

      // Without cluster mode, /cluster answers 404 and the panel stays hidden.
      const other = await browser.newPage();
      expect((await other.goto(`${plain.adminUrl}/`))?.status()).toBe(200);
      await waitTexts(other, '#updated', (t) => (t[0] ?? '').startsWith('updated'), 'a first poll');
      expect(await other.locator('#cluster-section').isHidden()).toBe(true);
      expect(await other.locator('#error').textContent()).toBe('');
    } finally {
      await browser.close();
    }
  });
});
