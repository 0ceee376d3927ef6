# An S3-compatible server (moto_server from moto[server], pinned in constraints.txt) for
# docker-compose.local.yml on hosts without an image registry; docker-compose.yml uses
# MinIO. moto keeps objects in memory and accepts any access key: a test and demo stand-in,
# not a store for real data. Built by include/docker/build_stack_images.sh FROM the
# mlops-loop/airflow image, whose venv already holds most of moto's dependencies (boto3,
# flask, werkzeug, cryptography), so only moto's own packages are added.
ARG BASE_IMAGE=mlops-loop/airflow:latest
FROM ${BASE_IMAGE}
ARG OFFLINE=0
ARG WHEELHOUSE_URL=""
USER root
COPY constraints.txt /tmp/s3-constraints.txt
RUN set -eux; \
    if [ "${OFFLINE}" = "1" ]; then \
        test -n "${WHEELHOUSE_URL}"; index_args="--no-index --find-links ${WHEELHOUSE_URL}"; \
    else index_args=""; fi; \
    /opt/airflow-venv/bin/pip install ${index_args} --constraint /tmp/s3-constraints.txt "moto[server]"; \
    rm /tmp/s3-constraints.txt
USER 50000:0
EXPOSE 9000
ENTRYPOINT []
CMD ["moto_server", "--host", "0.0.0.0", "--port", "9000"]
