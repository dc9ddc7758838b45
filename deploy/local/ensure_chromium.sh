#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests (tests/browser),
# which drive it with Playwright's Python package (Playwright's own browser download cannot
# work here). Idempotent: an installed Chromium is left alone.
#
# In order: /usr/bin/chromium exists -> as root on Debian/Ubuntu, install Debian's package
# -> say exactly how to get one and exit 1.
set -euo pipefail

readonly CHROMIUM=/usr/bin/chromium

say() { printf 'chromium: %s\n' "$*"; }

if [[ -x "$CHROMIUM" ]]; then
  exit 0
fi

if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  say "not installed; installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  [[ -x "$CHROMIUM" ]] && exit 0
fi

printf 'chromium: %s is missing. Install it as root: apt-get install -y chromium\n' \
  "$CHROMIUM" >&2
exit 1
