/**
 * The configs of the HTTP suite's C peers (bench/rows-http.ts): HAProxy in `mode http` and nginx
 * as an HTTP reverse proxy, both keeping connections to the backend alive and adding
 * `X-Forwarded-For` and `X-Request-Id` to every request, as Gatehouse always does. Buffers and
 * everything else are the packages' defaults. `ctx.peerThreads` is 1 when the proxy is pinned to
 * one CPU.
 */
import type { RowContext } from '../rows.ts';

/** HAProxy in HTTP mode: forwarded-for, a unique id as X-Request-Id, server connections reused. */
export function haproxyCfg(ctx: RowContext): string {
  return [
    'global',
    // The open-files hard limit here is 20,000; HAProxy reserves 2 fds per connection.
    '  maxconn 9800',
    `  nbthread ${ctx.peerThreads}`,
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
    `  bind 127.0.0.1:${ctx.listenPort}`,
    '  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid',
    '  http-request set-header X-Request-Id %[unique-id]',
    '  default_backend be',
    'backend be',
    `  server s1 ${ctx.upHost}:${ctx.upPort}`,
    '',
  ].join('\n');
}

/** nginx as an HTTP reverse proxy with an upstream keep-alive cache of 64 connections. */
export function nginxConf(ctx: RowContext, d: string): string {
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
    `    listen 127.0.0.1:${ctx.listenPort} backlog=4096;`,
    '    location / {',
    '      proxy_pass http://be;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      proxy_set_header Host $host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '      proxy_set_header X-Request-Id $request_id;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}
