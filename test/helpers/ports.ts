import net from 'node:net';
import { once } from 'node:events';

/**
 * Ports on 127.0.0.1 where a connect is refused, for backends that must be down. A port taken
 * with `listen(0)` and closed again is not one: while the tests run in parallel, the kernel may
 * hand it to another test's server at once (a "dead" backend then answered with someone's admin
 * API). Low ports are never handed out for port 0 (they are below the ephemeral range) and no
 * test listens on one, so each candidate is checked refused once and kept for this process.
 */
const CANDIDATES = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 23, 27, 29, 31, 33, 35, 37, 39];
let next = 0;

async function refused(port: number): Promise<boolean> {
  const s = net.connect(port, '127.0.0.1');
  try {
    await once(s, 'connect');
    return false;
  } catch {
    return true;
  } finally {
    s.destroy();
  }
}

/**
 * A distinct port on 127.0.0.1 that refuses connections (each call returns another one).
 *
 * @example
 * const dead = await refusedPort();
 * write(`backends: [ "127.0.0.1:${dead}" ]`);
 */
export async function refusedPort(): Promise<number> {
  while (next < CANDIDATES.length) {
    const p = CANDIDATES[next++]!;
    if (await refused(p)) return p;
  }
  throw new Error('no refused low port left on 127.0.0.1');
}
