#!/usr/bin/env bash
# The tools the deployment tests use (tests/unit/test_kubernetes_manifests.py,
# tests/unit/test_alert_rules.py): kubectl, which renders kustomizations offline
# (`kubectl kustomize`), and promtool, which checks and unit-tests the alert rules.
# Idempotent: what is installed is left alone.
#
# In order, for each: on the PATH already -> as root on Debian/Ubuntu, install the
# distribution's package (kubectl: `kubectl`, else `kubernetes-client`; promtool:
# `prometheus`, whose server is installed but not started) -> say how to get it. A missing
# promtool only narrows the alert tests to their parser checks, so it never fails the run.
set -euo pipefail

say() { printf 'deploy tools: %s\n' "$*"; }

can_apt() { [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }

updated=""
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "$updated" ]]; then apt-get update -qq; updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v kubectl >/dev/null 2>&1; then
  if can_apt; then
    say "kubectl is missing; installing it"
    apt_install kubectl 2>/dev/null || apt_install kubernetes-client
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    say "kubectl is missing. Install it as root: apt-get install -y kubectl" >&2
    exit 1
  fi
fi

if ! command -v promtool >/dev/null 2>&1 && can_apt; then
  say "promtool is missing; installing Debian's prometheus package for it"
  apt_install prometheus || say "could not install promtool; the alert tests check less"
fi
