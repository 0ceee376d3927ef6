# Airflow 3.3 image with the mlops-loop package (for docker-compose.yml): scheduler,
# API server, DAG processor, triggerer, Celery workers, and the MLflow server.
#
#   docker build -f include/docker/airflow.Dockerfile -t mlops-loop/airflow:latest .
#
# The workers start the trainer image through the Docker socket mounted from the host
# (DockerTrainOperator); training itself never runs in this image, so torch is left out.
# The official image runs as user `airflow` (uid 50000, gid 0); the socket's group on the
# host must allow it (compose: `group_add: ["<gid of /var/run/docker.sock>"]`).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER root
# Bind mounts of the trainer's request/result folder are resolved by the Docker host, so
# the folder lives at the same path on the host and in the workers (compose mounts
# /tmp/mlops-loop-io there and sets MLOPS_LOOP_TRAINER_IO_ROOT).
RUN mkdir -p /opt/mlops_loop /tmp/mlops-loop-io \
    && chown -R airflow:0 /opt/mlops_loop /tmp/mlops-loop-io
USER airflow

WORKDIR /opt/mlops_loop
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md ./
COPY --chown=airflow:0 plugins/ ./plugins/
# Airflow is already in the base image at the pinned version; constraints keep every other
# dependency on the versions the tests ran with. torch is not needed on the Airflow side.
RUN grep -v -E '^(torch|nvidia-|triton)' constraints.txt > /tmp/airflow-constraints.txt \
    && pip install --no-cache-dir --constraint /tmp/airflow-constraints.txt ".[airflow]" \
    && python -c "import mlops_loop.operators.docker_train, airflow; print('mlops-loop on Airflow', airflow.__version__)"

COPY --chown=airflow:0 dags/ ./dags/
COPY --chown=airflow:0 include/ ./include/

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/mlops_loop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/mlops_loop/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLOPS_LOOP_CONFIG_DIR=/opt/mlops_loop/include/config \
    MLOPS_LOOP_TRAINER_IO_ROOT=/tmp/mlops-loop-io
