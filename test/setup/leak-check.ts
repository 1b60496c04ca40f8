/**
 * Vitest set-up file, run before every test file (vitest.config.ts `setupFiles`). It records
 * what is alive before the file's modules load and, after the file's last `afterAll`, fails
 * the file if actors (here or inside running shard threads), sockets, servers, timers (unref'd
 * ones too), child processes, worker threads or other resources created since are still alive.
 * See docs/testing.md ("The leak check").
 *
 * Handle tracking starts first, so that everything the test file creates is seen. The baseline
 * is taken here at module top level, not in `beforeAll`: vitest schedules its own throttled
 * report timer around hooks. Vitest runs `afterAll` hooks in reverse order of registration
 * (`sequence.hooks: 'stack'`), so this hook, registered first, runs after the test file's own.
 */
import { afterAll } from 'vitest';
import { installHandleTracking } from './handles.ts';
import { expectNoLeaks, setFileBaseline, takeBaseline } from './leaks.ts';
import { installOriginTracking } from './origins.ts';
import { installWorkerTracking } from './worker-tracking.ts';

installHandleTracking();
installOriginTracking();
installWorkerTracking();
const baseline = await takeBaseline();
setFileBaseline(baseline);

afterAll(async () => {
  await expectNoLeaks({ baseline });
});
