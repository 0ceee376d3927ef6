# Sourced by the scripts: the project-local environment under .local/ (ignored by git).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MLOPS_LOOP_REPO="$REPO"
export PATH="$REPO/.local/venv/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$REPO/.local/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$REPO/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export MLOPS_LOOP_CONFIG_DIR="${MLOPS_LOOP_CONFIG_DIR:-$REPO/include/config}"
export TQDM_DISABLE=1
