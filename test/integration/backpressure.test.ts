/**
 * Backpressure through the daemon (issue 3): a backend writes 200 MB to a client that reads
 * slowly; the gateway holds back the backend instead of buffering, so its RSS stays bounded,
 * and every byte arrives.
 */
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Daemon, tempDir } from '../helpers/daemon.ts';

const TOTAL = 200 * 1024 * 1024;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

describe('backpressure through the daemon', () => {
  test('a slow reader of 200 MB: the gateway\'s RSS growth stays bounded and every byte arrives', async () => {
    // The backend writes 200 MB as fast as the gateway takes it, and counts what it handed over.
    let handed = 0;
    const sockets = new Set<net.Socket>();
    const backend = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = (): void => {
        while (handed < TOTAL) {
          handed += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    try {
      using dir = tempDir();
      const port = (backend.address() as net.AddressInfo).port;
      await using gh = await Daemon.start(
        dir.write(
          'gh.yaml',
          `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${port}" ], healthCheck: { enabled: false } } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
`,
        ),
      );
      const pid = gh.child.pid!;
      const client = net.connect({ port: gh.port('tcp-in'), host: '127.0.0.1' });
      client.on('error', () => {});
      await once(client, 'connect');
      const base = rssBytes(pid);
      let peak = base;
      let received = 0;
      let sinceBreak = 0;
      let maxAhead = 0;
      // The slow reader: after every 512 KiB it stops reading for 10 ms (about 50 MB/s at most,
      // far below what the backend and the gateway can move).
      client.on('data', (d: Buffer) => {
        received += d.length;
        sinceBreak += d.length;
        maxAhead = Math.max(maxAhead, handed - received);
        if (sinceBreak >= 512 * 1024) {
          sinceBreak = 0;
          peak = Math.max(peak, rssBytes(pid));
          client.pause();
          setTimeout(() => client.resume(), 10);
        }
      });
      await once(client, 'end');
      client.destroy();
      expect(received).toBe(TOTAL);
      // What the backend handed over but the client had not read is in socket buffers (kernel and
      // the gateway's two high-water marks), never the bulk of the 200 MB.
      expect(maxAhead).toBeLessThan(16 * 1024 * 1024);
      // The gateway's RSS grew by far less than what went through it.
      expect(peak - base).toBeLessThan(48 * 1024 * 1024);
      expect(await gh.stop()).toBe(0);
    } finally {
      for (const s of sockets) s.destroy();
      backend.close();
      await once(backend, 'close');
    }
  }, 60_000);
});
