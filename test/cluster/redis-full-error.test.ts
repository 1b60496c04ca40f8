/**
 * isRedisFull: which ioredis errors mean "Redis is out of memory", including the shapes whose
 * previousErrors refer back to themselves (seen in a transaction cut by a closed connection,
 * where the recursion overflowed the stack and the unhandled rejection ended the daemon).
 */
import { describe, expect, test } from 'vitest';
import { isRedisFull } from '../../src/cluster/cluster.ts';

type Err = Error & { previousErrors?: unknown[] };

describe('isRedisFull', () => {
  test('an OOM reply, directly or among a transaction’s previousErrors; anything else is not', () => {
    expect(isRedisFull(new Error("OOM command not allowed when used memory > 'maxmemory'."))).toBe(true);
    const exec: Err = new Error('EXECABORT Transaction discarded because of previous errors.');
    exec.previousErrors = [new Error('OOM command not allowed when used memory > \'maxmemory\'.')];
    expect(isRedisFull(exec)).toBe(true);
    expect(isRedisFull(new Error('Connection is closed.'))).toBe(false);
    expect(isRedisFull(undefined)).toBe(false);
    expect(isRedisFull('OOM as a string')).toBe(false);
  });

  test('errors that list themselves (or each other) among previousErrors: an answer, not a stack overflow', () => {
    const self: Err = new Error('Command timed out');
    self.previousErrors = [self];
    expect(isRedisFull(self)).toBe(false);
    const a: Err = new Error('EXECABORT');
    const b: Err = new Error('Connection is closed.');
    a.previousErrors = [b];
    b.previousErrors = [a, new Error('OOM command not allowed')];
    expect(isRedisFull(a)).toBe(true);
    b.previousErrors = [a];
    expect(isRedisFull(a)).toBe(false);
  });
});
