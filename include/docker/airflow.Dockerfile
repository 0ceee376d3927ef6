# Airflow 3.3 image with the mlops-loop package and its [celery] extra (CeleryExecutor on
# Redis + PostgreSQL), for docker-compose.yml: api-server, scheduler, dag-processor,
# triggerer, Celery workers, the init job, and the MLflow server (mlflow, boto3 and
# psycopg2 are dependencies already, so the server runs the same MLflow as its clients).
#
# Built by include/docker/build_stack_images.sh, which assembles a small build context:
#   requirements.txt  the package's dependencies + [airflow] + [celery] (from pyproject.toml)
#   constraints.txt   the project's pins (torch left out: training never runs here)
#   wheelhouse/       the mlops_loop wheel
#   dags/ plugins/ include/{config,expectations}/
# BASE_IMAGE: mlops-loop/base:bookworm-py311 offline (OFFLINE=1 + WHEELHOUSE_URL, served on
# 127.0.0.1 by the build script), python:3.11-slim-bookworm with --online.
#
# The workers start the trainer image through the Docker socket that compose mounts into
# them only. Runs as uid ${AIRFLOW_UID} (compose `user:`) with gid 0: everything the
# services write (AIRFLOW_HOME, logs, the login file) is group 0 writable, so any uid works.
ARG BASE_IMAGE=mlops-loop/base:bookworm-py311
FROM ${BASE_IMAGE}

ARG OFFLINE=0
ARG WHEELHOUSE_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1

USER root
# Layer 1, the dependencies: cached until requirements, pins or the base image change.
COPY requirements.txt constraints.txt /tmp/mlops-loop/
RUN set -eux; \
    python3 -m venv /opt/airflow-venv; \
    if [ "${OFFLINE}" = "1" ]; then \
        test -n "${WHEELHOUSE_URL}"; index_args="--no-index --find-links ${WHEELHOUSE_URL}"; \
    else index_args=""; fi; \
    /opt/airflow-venv/bin/pip install ${index_args} --constraint /tmp/mlops-loop/constraints.txt \
        --requirement /tmp/mlops-loop/requirements.txt; \
    for pkg in pandas numpy scipy sklearn pyarrow; do \
        rm -rf /opt/airflow-venv/lib/python3*/site-packages/"${pkg}"/tests; \
    done; \
    useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow; \
    mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/mlops_loop; \
    chown -R 50000:0 /opt/airflow; chmod -R g+rwX /opt/airflow

# No folder for the trainer's request/result: both travel through the Docker API (the
# environment and the container's stdout), so the Docker host may be another machine.
RUN mkdir -p /opt/mlops_loop && chown -R airflow:0 /opt/mlops_loop

# Layer 2, the package itself (small; its dependencies are all in layer 1).
COPY wheelhouse/ /tmp/mlops-loop/wheelhouse/
RUN set -eux; \
    /opt/airflow-venv/bin/pip install --no-index --no-deps /tmp/mlops-loop/wheelhouse/mlops_loop-*.whl; \
    rm -rf /tmp/mlops-loop; \
    /opt/airflow-venv/bin/python -c "import mlops_loop.operators.docker_train, airflow, airflow.providers.celery; print('mlops-loop on Airflow', airflow.__version__)"

WORKDIR /opt/mlops_loop
COPY dags/ ./dags/
COPY plugins/ ./plugins/
COPY include/ ./include/

ENV PATH=/opt/airflow-venv/bin:${PATH} \
    HOME=/opt/airflow \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/mlops_loop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/mlops_loop/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLOPS_LOOP_CONFIG_DIR=/opt/mlops_loop/include/config \
    PYTHONUNBUFFERED=1
USER 50000:0
ENTRYPOINT ["airflow"]
CMD ["version"]
