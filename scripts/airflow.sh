#!/usr/bin/env bash
# Runs the `airflow` CLI on the project-local Airflow home the demo uses, e.g.
#   ./scripts/airflow.sh standalone      (web UI on http://127.0.0.1:8080)
#   ./scripts/airflow.sh dags list
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
./scripts/bootstrap.sh
exec airflow "$@"
