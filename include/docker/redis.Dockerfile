# redis-server from Debian bookworm, for docker-compose.local.yml on hosts without an image
# registry (docker-compose.yml uses the official redis image). The Celery broker only:
# nothing is persisted. Built by include/docker/build_stack_images.sh (--network host).
ARG BASE_IMAGE=mlops-loop/base:bookworm-py311
FROM ${BASE_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
    rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
