#!/usr/bin/env bash
# The demo command (README: `make demo`). Creates the venv on first use, then runs the
# demo loop on the project-local Airflow home and storage under .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
./scripts/bootstrap.sh
# Training, evaluation and drift run in the trainer container: start a local Docker
# engine when we may (root); demo.py builds the trainer image on first use, and without
# an engine runs the trainer entrypoint as a local process (it says so).
if [ "$(id -u)" -eq 0 ]; then
    ./scripts/install_docker.sh
    ./include/docker/build_base_image.sh
fi
exec python scripts/demo.py "$@"
