#!/usr/bin/env bash
# Install and start a local Docker engine (idempotent).
#
# - installs Debian's docker.io when `dockerd` is missing;
# - starts dockerd in the background when `docker info` does not answer, with the flags
#   that work in sandboxes without iptables or a bridge (containers then use
#   network mode "host");
# - waits until `docker info` answers.
#
# Usage: sudo scripts/install_docker.sh        (as root)
# Env:   DOCKERD_LOG (default /var/log/dockerd.log), DOCKER_WAIT_SECONDS (default 60)
set -euo pipefail

log_file="${DOCKERD_LOG:-/var/log/dockerd.log}"
wait_seconds="${DOCKER_WAIT_SECONDS:-60}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install_docker.sh: must run as root (installs packages and starts dockerd)" >&2
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "install_docker.sh: installing docker.io from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
    echo "install_docker.sh: Docker engine already running"
    exit 0
fi

echo "install_docker.sh: starting dockerd (log: ${log_file})"
mkdir -p "$(dirname "${log_file}")"
# setsid + nohup: the daemon outlives this script and the shell that ran it.
setsid nohup dockerd --iptables=false --bridge=none >>"${log_file}" 2>&1 </dev/null &

for _ in $(seq "${wait_seconds}"); do
    if docker info >/dev/null 2>&1; then
        echo "install_docker.sh: Docker engine is up ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done

echo "install_docker.sh: dockerd did not answer within ${wait_seconds}s; last log lines:" >&2
tail -n 30 "${log_file}" >&2
exit 1
