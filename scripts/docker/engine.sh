#!/usr/bin/env bash
# Makes sure a Docker engine answers, idempotently: an engine that already answers is used as it
# is (a laptop's Docker Desktop, CI's service). Otherwise, as root on Debian/Ubuntu, installs
# docker.io and starts dockerd by hand (containers here have no init system to do it).
# The daemon gets no default bridge and no NAT rules: every container and build of this project
# uses host networking, so nothing is ever put on a bridge network.
# Exit status: 0 when `docker info` answers, 1 otherwise (with the reason on stderr).
set -euo pipefail

log_file=${P11KMS_DOCKERD_LOG:-/var/log/p11kms-dockerd.log}
wait_s=${P11KMS_DOCKERD_WAIT_S:-60}

say() { echo "p11kms docker: $*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null && engine_answers; then exit 0; fi

if ! command -v dockerd >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "no Docker engine answers and dockerd is not installed (install Docker, or run this as root on Debian/Ubuntu)"
    exit 1
  fi
  say "installing docker.io (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  say "dockerd is installed but not running, and starting it needs root"
  exit 1
fi

say "starting dockerd (log: $log_file)"
nohup dockerd --bridge=none --iptables=false </dev/null >"$log_file" 2>&1 &
pid=$!
deadline=$((SECONDS + wait_s))
until engine_answers; do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "dockerd exited at start-up; last lines of $log_file:"; tail -20 "$log_file" >&2; exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "dockerd did not answer within ${wait_s}s; last lines of $log_file:"; tail -20 "$log_file" >&2; exit 1
  fi
  sleep 0.1
done
say "dockerd answers (pid $pid)"
