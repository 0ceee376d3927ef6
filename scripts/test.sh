#!/usr/bin/env bash
# The test command (README: `make test`). Installs what the tests need, idempotently:
# the virtual environment, a Docker engine and the locally built images. Then lint,
# type checks and the whole test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export AIRFLOW_HOME="$REPO/.local/airflow-test"
# Everything the tests need is installed below, so a missing part fails its tests instead
# of skipping them (tests/fixtures: missing).
export MLOPS_LOOP_TEST_ALL=1

./scripts/bootstrap.sh
if [ "$(id -u)" -eq 0 ]; then
    ./scripts/install_docker.sh
    command -v docker-compose >/dev/null 2>&1 || apt-get install -y -qq docker-compose >/dev/null
    # Debian's chromium for the browser test (tests/stack/test_web_ui.py, marker browser).
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || apt-get install -y -qq chromium chromium-driver >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
else
    docker info >/dev/null 2>&1 || { echo "test: no Docker engine and not root to start one; run scripts/install_docker.sh as root" >&2; exit 1; }
fi
# PostgreSQL for the tests against a real Airflow deployment (tests/stack); started when
# it is installed but not running, left alone otherwise.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Redis, the Celery broker of the CeleryExecutor stack test (tests/stack/test_celery_loop.py):
# installed (root) and started when missing, left alone when it answers.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        apt-get install -y -qq redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
    fi
    if command -v redis-server >/dev/null 2>&1; then
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
fi
./include/docker/build_base_image.sh
./include/docker/build_trainer_image.sh

echo "== ruff"
ruff check .
echo "== mypy (package, plugin, DAG files)"
mypy
echo "== pytest"
python -m pytest "$@"
