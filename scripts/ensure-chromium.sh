#!/bin/sh
# Run by `npm test` before the tests: test/admin/ui-browser.test.ts drives Debian's chromium
# (playwright-core downloads no browser) and fails without it. Installs it with apt-get when it
# is missing and we may (root, apt-get present); otherwise says in one line what to run.
# CHROMIUM_PATH overrides where it is looked for (default /usr/bin/chromium, what the test uses).
set -u
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
hint='run "apt-get install -y chromium" as root'
[ -x "$chromium" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing: installing it with apt-get" >&2
  if apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && [ -x "$chromium" ]; then
    exit 0
  fi
  echo "chromium is missing and apt-get could not install it: $hint" >&2
  exit 1
fi
echo "chromium is missing: $hint" >&2
exit 1
