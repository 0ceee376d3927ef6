#!/usr/bin/env bash
# The demo command (README: `make demo`). Creates the venv on first use, then runs the
# demo loop on the project-local Airflow home and storage under .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
./scripts/bootstrap.sh
exec python scripts/demo.py "$@"
