#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672 with its management API on :15672
# (the tests create a vhost per test through that API). Idempotent: a broker that already
# answers is left alone, and running this twice changes nothing.
#
# In order: a broker already answers -> start the installed one (`rabbitmq-server -detached`)
# -> as root on Debian/Ubuntu, install Debian's package and start it -> say exactly how to get
# one and exit 1. Then enable the management plugin if needed and wait until its API answers.
#
# Knobs, rarely needed: RABBITMQ_NODE_PORT (5672, RabbitMQ's own variable),
# JICM_RABBITMQ_MGMT_PORT (15672), JICM_RABBITMQ_WAIT (seconds to wait for each step, 60).
set -euo pipefail

readonly HOST=127.0.0.1
readonly AMQP_PORT="${RABBITMQ_NODE_PORT:-5672}"
readonly MGMT_PORT="${JICM_RABBITMQ_MGMT_PORT:-15672}"
readonly WAIT="${JICM_RABBITMQ_WAIT:-60}"
readonly MGMT_URL="http://${HOST}:${MGMT_PORT}/api/overview"

# Debian keeps rabbitmq-server and its tools in /usr/sbin, often not on a user's PATH.
PATH="${PATH}:/usr/sbin:/sbin"

say() { printf 'rabbitmq: %s\n' "$*"; }
die() {
  printf 'rabbitmq: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# bash's /dev/tcp needs no nc or ss; the subshell closes the connection at once.
port_open() { (exec 3<>"/dev/tcp/${HOST}/$1") 2>/dev/null; }

management_answers() {
  if have curl; then
    curl -fsS -o /dev/null --max-time 3 -u guest:guest "$MGMT_URL" 2>/dev/null
    return
  fi
  python3 - "$MGMT_URL" 2>/dev/null <<'PY'
import base64, sys, urllib.request
auth = "Basic " + base64.b64encode(b"guest:guest").decode()
urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Authorization": auth}), timeout=3)
PY
}

# RabbitMQ's admin commands on Debian accept only root or the rabbitmq user: use password-less
# sudo when we are neither and it is there, else try as we are (a broker in our own account).
as_admin() {
  local cmd
  cmd="$(command -v "$1")"
  shift
  if [[ $EUID -eq 0 || "$(id -un)" == rabbitmq ]]; then
    "$cmd" "$@"
  elif have sudo && sudo -n true 2>/dev/null; then
    sudo -n "$cmd" "$@"
  else
    "$cmd" "$@"
  fi
}

# wait_until CMD...: run CMD every half second until it succeeds or WAIT seconds have passed.
wait_until() {
  local deadline=$((SECONDS + WAIT))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

await_startup() {
  have rabbitmqctl || return 0
  local rc=0
  as_admin rabbitmqctl await_startup --timeout "$WAIT" >/dev/null 2>&1 || rc=$?
  # 64 (usage error): a RabbitMQ too old to know await_startup; the open port has to do.
  [[ $rc -eq 0 || $rc -eq 64 ]] || die "rabbitmqctl await_startup failed (exit $rc); see /var/log/rabbitmq/"
}

start_installed() {
  say "starting the installed RabbitMQ (rabbitmq-server -detached)"
  # It fails when a node is already booting (a service manager beat us to it): not fatal,
  # whether the port opens is what decides.
  as_admin rabbitmq-server -detached >/dev/null 2>&1 ||
    say "rabbitmq-server -detached exited with $?; waiting for the port anyway"
  wait_until port_open "$AMQP_PORT" ||
    die "RabbitMQ did not open ${HOST}:${AMQP_PORT} within ${WAIT} s; see /var/log/rabbitmq/"
  await_startup
  say "RabbitMQ is up on ${HOST}:${AMQP_PORT}"
}

install_debian() {
  say "no RabbitMQ installed: installing Debian's rabbitmq-server package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q rabbitmq-server
}

explain_and_exit() {
  cat >&2 <<EOF
rabbitmq: nothing answers on ${HOST}:${AMQP_PORT} and RabbitMQ is not installed.
Get one, then run this again:
  Debian/Ubuntu:  sudo apt-get install -y rabbitmq-server
  Docker:         docker run -d --name rabbitmq -p 5672:5672 -p 15672:15672 rabbitmq:3-management
  macOS:          brew install rabbitmq && brew services start rabbitmq
EOF
  exit 1
}

management_enabled() {
  local enabled
  enabled="$(as_admin rabbitmq-plugins list --enabled --minimal 2>/dev/null)" || return 1
  grep -qx rabbitmq_management <<<"$enabled"
}

ensure_management() {
  if management_answers; then
    say "management API answers on http://${HOST}:${MGMT_PORT}/"
    return
  fi
  if have rabbitmq-plugins && ! management_enabled; then
    say "enabling the management plugin"
    as_admin rabbitmq-plugins enable rabbitmq_management >/dev/null
  fi
  wait_until management_answers ||
    die "the management API does not answer on ${MGMT_URL} (guest:guest) after ${WAIT} s;" \
      "enable it with: rabbitmq-plugins enable rabbitmq_management"
  say "management API answers on http://${HOST}:${MGMT_PORT}/"
}

main() {
  if port_open "$AMQP_PORT"; then
    say "a broker already answers on ${HOST}:${AMQP_PORT}"
  elif have rabbitmq-server; then
    start_installed
  elif [[ $EUID -eq 0 ]] && have apt-get; then
    install_debian
    # The package's post-install usually starts the broker; start it if it did not.
    port_open "$AMQP_PORT" || start_installed
  else
    explain_and_exit
  fi
  ensure_management
  say "ready: amqp://guest:guest@${HOST}:${AMQP_PORT}/"
}

main "$@"
