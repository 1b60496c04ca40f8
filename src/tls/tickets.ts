/**
 * Session tickets renewed on every resumption (TLS 1.3).
 *
 * With `ticketKeys`, Node's server decrypts a ticket with a fixed OpenSSL callback that never
 * asks for a new one, and OpenSSL's TLS 1.3 server then sends no `NewSessionTicket` after a
 * resumed handshake (nodejs/node#60847 is the open issue about TLS 1.3 resumption). A client that
 * keeps only the session of its last connection (wrk, curl, most HTTP clients, OpenSSL's
 * `SSL_get1_session` after the handshake) is left without a ticket after each resumption: it
 * resumes every other connection. HAProxy and nginx send a new ticket after a resumption.
 *
 * Node's native secure context has the hook its own test of ticket renewal uses
 * (test/parallel/test-https-resume-after-renew.js): `enableTicketKeyCallback()` and an
 * `onticketkeycallback` property. It is not a documented API, so {@link renewTickets} checks that it
 * is there and changes nothing when it is not (resumption then works as before, without renewal).
 * The callback encrypts with the same keys and the same algorithms as Node's default one (the
 * 48 bytes of `ticketKeys`: name, HMAC-SHA256 key, AES-128-CBC key), so a ticket issued by one is
 * accepted by the other: shards and contexts may mix them.
 */
import { randomBytes } from 'node:crypto';
import type tls from 'node:tls';

/** What Node's native `SecureContext` has for the hook (internal: checked before use). */
interface NativeTicketHooks {
  enableTicketKeyCallback?: () => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, enc: boolean) => [number, Buffer, Buffer, Buffer?, Buffer?];
}

/** OpenSSL's ticket key callback results: 0 unknown ticket (full handshake), 1 ok, 2 ok and issue a new one. */
const UNKNOWN = 0;
const OK = 1;
const RENEW = 2;

/**
 * Makes `ctx` answer ticket operations with `keys` (48 bytes), asking for a new ticket after
 * each resumed handshake. `sessionContext` is the context a connection starts with (a
 * `tls.Server`'s own, the one OpenSSL keeps as the session context): only it turns the hook on;
 * every context an `SNICallback` may switch to needs the callback too (Node looks the callback
 * up on the connection's current context). Returns false when this Node has no such hook.
 *
 * @example
 * renewTickets(serverContext, keys, true);
 * for (const c of sniContexts) renewTickets(c, keys, false);
 */
export function renewTickets(ctx: tls.SecureContext | undefined, keys: Buffer, sessionContext: boolean): boolean {
  const native = (ctx as (tls.SecureContext & { context?: NativeTicketHooks }) | undefined)?.context;
  if (!native || typeof native.enableTicketKeyCallback !== 'function' || keys.length !== 48) return false;
  const name = Buffer.from(keys.subarray(0, 16));
  const hmac = Buffer.from(keys.subarray(16, 32));
  const aes = Buffer.from(keys.subarray(32, 48));
  // Runs inside OpenSSL's handshake: it must not throw (nothing here can).
  native.onticketkeycallback = (ticketName: Buffer, _iv: Buffer, enc: boolean) => (enc ? [OK, hmac, aes, name, randomBytes(16)] : [ticketName.equals(name) ? RENEW : UNKNOWN, hmac, aes]);
  if (sessionContext) native.enableTicketKeyCallback();
  return true;
}

/** The context a `tls.Server` gives new connections (Node keeps it in `_sharedCreds`), if it can be found. */
export function serverContext(server: tls.Server): tls.SecureContext | undefined {
  return (server as tls.Server & { _sharedCreds?: tls.SecureContext })._sharedCreds;
}
