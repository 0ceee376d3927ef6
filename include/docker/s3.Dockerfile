# An S3-compatible server (moto_server from moto[server], pinned in constraints.txt) for
# docker-compose.local.yml on hosts without an image registry; docker-compose.yml uses
# MinIO. moto keeps objects in memory and accepts any access key: a test and demo stand-in,
# not a store for real data. Built by include/docker/build_stack_images.sh.
ARG BASE_IMAGE=mlops-loop/base:bookworm-py311
FROM ${BASE_IMAGE}
ARG OFFLINE=0
ARG WHEELHOUSE_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY constraints.txt /tmp/constraints.txt
RUN set -eux; \
    python3 -m venv /opt/s3-venv; \
    if [ "${OFFLINE}" = "1" ]; then \
        test -n "${WHEELHOUSE_URL}"; index_args="--no-index --find-links ${WHEELHOUSE_URL}"; \
    else index_args=""; fi; \
    /opt/s3-venv/bin/pip install ${index_args} --constraint /tmp/constraints.txt "moto[server]"; \
    rm /tmp/constraints.txt; \
    useradd --uid 10002 --no-create-home --shell /usr/sbin/nologin s3
ENV PATH=/opt/s3-venv/bin:${PATH} PYTHONUNBUFFERED=1
USER 10002
EXPOSE 9000
CMD ["moto_server", "--host", "0.0.0.0", "--port", "9000"]
