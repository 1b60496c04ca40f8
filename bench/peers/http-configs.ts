/**
 * The configs of the HTTP suite's C peers (bench/rows-http.ts): HAProxy in `mode http` and nginx
 * as an HTTP reverse proxy, both keeping connections to the backend alive and adding
 * `X-Forwarded-For` and `X-Request-Id` to every request, as Gatehouse always does. Buffers and
 * everything else are the packages' defaults. `ctx.peerThreads` is 1 when the proxy is pinned to
 * one CPU. With `tls` (the TLS suite, `bench/http.ts --tls`) both terminate TLS on their listener
 * with the run's certificate, default protocols and ciphers, session tickets on (their default),
 * and add `X-Forwarded-Proto: https` as Gatehouse does; the backend stays plain HTTP.
 */
import path from 'node:path';
import type { RowContext } from '../rows.ts';

/** The run's certificate (EC P-256, self-signed): PEM files in the run's directory. */
export interface TlsFiles { cert: string; key: string; /** cert + key in one file (HAProxy's `crt`) */ pem: string }

/** The TLS files of a run directory (written by bench/http.ts at the start of a TLS run). */
export function tlsFiles(dir: string): TlsFiles {
  return { cert: path.join(dir, 'tls', 'cert.pem'), key: path.join(dir, 'tls', 'key.pem'), pem: path.join(dir, 'tls', 'cert+key.pem') };
}

/** The stats socket of the TLS HAProxy row listening on `port` (its handshake counters). */
export function haproxyStatsSocket(dir: string, port: number): string {
  return path.join(dir, `haproxy-tls-${port}.sock`);
}

/** HAProxy in HTTP mode: forwarded-for, a unique id as X-Request-Id, server connections reused. */
export function haproxyCfg(ctx: RowContext, tls?: TlsFiles): string {
  return [
    'global',
    // The open-files hard limit here is 20,000; HAProxy reserves 2 fds per connection.
    '  maxconn 9800',
    `  nbthread ${ctx.peerThreads}`,
    ...(tls ? [`  stats socket ${haproxyStatsSocket(ctx.dir, ctx.listenPort)}`] : []),
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    '  option forwardfor',
    '  http-reuse always',
    '  timeout connect 5s',
    '  timeout client 120s',
    '  timeout server 120s',
    '  timeout http-keep-alive 120s',
    'frontend fe',
    `  bind 127.0.0.1:${ctx.listenPort}${tls ? ` ssl crt ${tls.pem}` : ''}`,
    ...(tls ? ['  http-request set-header X-Forwarded-Proto https'] : []),
    '  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid',
    '  http-request set-header X-Request-Id %[unique-id]',
    '  default_backend be',
    'backend be',
    `  server s1 ${ctx.upHost}:${ctx.upPort}`,
    '',
  ].join('\n');
}

/** nginx as an HTTP reverse proxy with an upstream keep-alive cache of 64 connections. */
export function nginxConf(ctx: RowContext, d: string, tls?: TlsFiles): string {
  return [
    `worker_processes ${ctx.peerThreads};`,
    'worker_rlimit_nofile 20000;',
    'daemon off;',
    'master_process on;',
    `pid ${d}/nginx.pid;`,
    `error_log ${d}/error.log warn;`,
    'events { worker_connections 19500; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${d}/cb; proxy_temp_path ${d}/pt; fastcgi_temp_path ${d}/ft; uwsgi_temp_path ${d}/ut; scgi_temp_path ${d}/st;`,
    // nginx closes a client connection after 1,000 requests by default; the other rows do not.
    '  keepalive_requests 10000000;',
    '  keepalive_timeout 300s;',
    `  upstream be { server ${ctx.upHost}:${ctx.upPort}; keepalive 64; keepalive_requests 10000000; }`,
    '  server {',
    `    listen 127.0.0.1:${ctx.listenPort}${tls ? ' ssl' : ''} backlog=4096;`,
    // nginx 1.22 leaves TLS 1.3 out by default (1.23.4 added it); the others offer 1.2 and 1.3.
    ...(tls ? [`    ssl_certificate ${tls.cert};`, `    ssl_certificate_key ${tls.key};`, '    ssl_protocols TLSv1.2 TLSv1.3;', '    ssl_session_tickets on;'] : []),
    '    location / {',
    '      proxy_pass http://be;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      proxy_set_header Host $host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '      proxy_set_header X-Request-Id $request_id;',
    ...(tls ? ['      proxy_set_header X-Forwarded-Proto https;'] : []),
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}
