#!/usr/bin/env bash
# Make sure `wrk`, the HTTP load generator the `checkin` and `footprint` benchmarks drive
# the gateway with (bench/load.py), is on the PATH. Idempotent: an installed wrk is left
# alone.
#
# In order: wrk is on the PATH -> as root on Debian/Ubuntu, install the distribution's
# package -> say exactly how to get one and exit 1.
set -euo pipefail

say() { printf 'wrk: %s\n' "$*"; }

if command -v wrk >/dev/null 2>&1; then
  exit 0
fi

if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  say "not installed; installing the wrk package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends wrk >/dev/null
  command -v wrk >/dev/null 2>&1 && exit 0
fi

say "wrk is missing. Install it as root: apt-get install -y wrk" >&2
exit 1
