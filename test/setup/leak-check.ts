/**
 * Vitest set-up file, run before every test file (vitest.config.ts `setupFiles`). It records
 * what is alive before the file's modules load and, after the file's last `afterAll`, fails
 * the file if actors, sockets, servers, timers, child processes, worker threads or other
 * resources are left over. See docs/testing.md ("The leak check").
 *
 * The baseline is taken here at module top level, not in `beforeAll`: vitest schedules its own
 * throttled report timer around hooks, which would otherwise count in the baseline and hide
 * one leaked timer. Vitest runs `afterAll` hooks in reverse order of registration
 * (`sequence.hooks: 'stack'`), so this hook, registered first, runs after the test file's own.
 */
import { afterAll } from 'vitest';
import { expectNoLeaks, setFileBaseline, takeBaseline } from './leaks.ts';
import { installOriginTracking } from './origins.ts';
import { installWorkerTracking } from './worker-tracking.ts';

installOriginTracking();
installWorkerTracking();
const baseline = takeBaseline();
setFileBaseline(baseline);

afterAll(async () => {
  await expectNoLeaks({ baseline });
});
