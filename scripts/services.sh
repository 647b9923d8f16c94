#!/usr/bin/env bash
# Make sure what the tests talk to is there: PostgreSQL, Redis, RabbitMQ and NATS (with
# JetStream) running, and Prometheus's promtool/prometheus/amtool, curl and jq
# installed (Debian packages).
# Needs root for apt-get; without it, missing pieces make their tests skip
# (or fail, when CI is set).
set -uo pipefail
if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null \
  || ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      prometheus prometheus-alertmanager curl jq >/dev/null
  else
    echo "missing: install Debian's prometheus, prometheus-alertmanager, curl and jq" >&2
  fi
fi
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  fi
fi
if command -v rabbitmqctl >/dev/null && ! rabbitmqctl -q status >/dev/null 2>&1; then
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached || true
    for _ in $(seq 30); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
if ! command -v nats-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
if command -v nats-server >/dev/null \
  && ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  nats-server --jetstream --addr 127.0.0.1 --port 4222 \
    --store_dir "${TMPDIR:-/tmp}/taskiq-exporter-nats" >/dev/null 2>&1 &
  for _ in $(seq 10); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 1; done
fi
exit 0
