import type net from 'node:net';

/*
 * Sockets that proxy read into buffers of the thread (net's `onread`) instead of a fresh 64 KiB
 * allocation per read, which the kernel then copies into cold memory (docs/benchmarks.md,
 * "Bulk"). Every such socket starts on SHARED; what is read into it is copied before it is
 * written (the write may keep its chunk until flushed, and the next read by any socket
 * overwrites SHARED). A full read means data is streaming: the socket then gets a HOT buffer of
 * its own, from a free list of the thread, written without a copy. A HOT buffer that a write
 * still holds (not flushed at once) is left to that write and replaced; a short read whose write
 * completed gives it back and returns the socket to SHARED. So an idle connection holds no read
 * buffer, and a busy one reuses the same warm 64 KiB.
 */
const READ_BUF = 64 * 1024;
const SHARED = Buffer.allocUnsafeSlow(READ_BUF);
const freeHot: Buffer[] = [];
const FREE_HOT_MAX = 32;
/** The buffer the socket that just read is to read into next: set by the read callback, taken by {@link nextReadBuffer} right after it (Node calls both back to back, synchronously). */
let handoff: Buffer = SHARED;

function takeHot(): Buffer {
  return freeHot.pop() ?? Buffer.allocUnsafeSlow(READ_BUF);
}

/** Gives a HOT buffer back to the thread's free list (its socket is gone, and no write holds it). */
export function releaseHot(b: Buffer): void {
  if (freeHot.length < FREE_HOT_MAX) freeHot.push(b);
}

/** The reading socket's HOT buffer after {@link forwardRead} (an out-parameter: no object per read). */
export let readHot: Buffer | undefined;

/** What a TLS socket's read holds at most: one decrypted record (Node's TLSWrap reads 16 KiB at a time). */
export const TLS_READ = 16 * 1024;

/**
 * Writes the `n` bytes a socket read into `buf` (SHARED or its HOT buffer) to `to`, and decides
 * the buffer it reads into next and its HOT buffer ({@link readHot}). Returns what the write
 * returned: false asks the reading socket to stop until `to` drains. `full` is the size of a read
 * that means data is streaming: a whole buffer for a plain socket, a whole TLS record
 * ({@link TLS_READ}) for a TLS socket reading through `onread` ({@link readTlsThroughOnread}).
 *
 * @example
 * // an onread callback: (n, buf) => { const ok = forwardRead(other, n, buf); mine.hot = readHot; return ok; }
 */
export function forwardRead(to: net.Socket, n: number, buf: Buffer, full: number = READ_BUF): boolean {
  if (buf === SHARED) {
    // Copied: the next read by any socket of the thread overwrites SHARED.
    const ok = to.write(Buffer.from(buf.subarray(0, n)));
    readHot = n >= full ? (handoff = takeHot()) : undefined;
    return ok;
  }
  const queued = to.writableLength;
  const ok = to.write(n === READ_BUF ? buf : buf.subarray(0, n));
  if (to.writableLength > queued) {
    // Not flushed at once: the pending write holds buf, which is the write's now.
    readHot = n >= full ? takeHot() : undefined;
    handoff = readHot ?? SHARED;
  } else if (n < full) {
    releaseHot(buf);
    readHot = undefined;
    handoff = SHARED;
  } else {
    readHot = buf;
    handoff = buf;
  }
  return ok;
}

/**
 * The `onread.buffer` function of every proxying socket: the buffer chosen by the read callback
 * that just ran (SHARED when none did, e.g. at connect).
 *
 * @example
 * net.connect({ host, port, onread: { buffer: nextReadBuffer, callback } });
 */
export function nextReadBuffer(): Buffer {
  const b = handoff;
  handoff = SHARED;
  return b;
}

/**
 * Forgets the buffer a read callback chose when it threw before Node asked for it: the next
 * socket to read must not be handed a buffer a write of the failed one may still hold.
 */
export function abandonRead(): void {
  handoff = SHARED;
}
