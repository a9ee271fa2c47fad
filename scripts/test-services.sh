#!/usr/bin/env bash
# What the test suite needs besides the virtualenv, set up when it is missing:
#   - Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (started when they do not answer);
#   - Debian's Chromium and ChromeDriver for the dashboard tests (installed as root with apt;
#     otherwise this stops with the one command to run).
# `make test` runs it first; .ci/run calls `make test`. Failures stop it: nothing is skipped.
set -euo pipefail

say() { echo "test-services: $*"; }

wait_until() {  # wait_until <what> <command...>: up to 10 s
  local what=$1; shift
  for _ in $(seq 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up"; return 1
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432; }

if ! redis_up 2>/dev/null; then
  command -v redis-server >/dev/null || {
    say "Redis is not running and redis-server is not installed: apt-get install -y redis-server"
    exit 1
  }
  say "starting Redis on 127.0.0.1:6379"
  mkdir -p /tmp/backprop-redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp/backprop-redis --logfile /tmp/backprop-redis/redis.log
  wait_until "Redis" redis_up
fi

if ! pg_up >/dev/null 2>&1; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    wait_until "PostgreSQL" pg_up
  else
    say "PostgreSQL does not answer at 127.0.0.1:5432; start one (user postgres, trust auth)" \
      "or set BACKPROP_TEST_PG_ADMIN_URL"
    exit 1
  fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  install="apt-get update && apt-get install -y chromium chromium-driver"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Chromium and ChromeDriver for the dashboard tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "the dashboard tests need Chromium and ChromeDriver; install them with: sudo sh -c '$install'"
    exit 1
  fi
fi
say "Redis, PostgreSQL and Chromium are ready"
