# PostgreSQL 15 from Debian bookworm, for docker-compose.local.yml on hosts without an image
# registry (docker-compose.yml uses the official postgres image). Speaks the official
# image's environment: POSTGRES_USER, POSTGRES_PASSWORD (required), POSTGRES_DB; data in
# /var/lib/postgresql/data. Built by include/docker/build_stack_images.sh (--network host:
# apt reaches the host's Debian mirror).
ARG BASE_IMAGE=mlops-loop/base:bookworm-py311
FROM ${BASE_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \
    chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:${PATH} PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["bash", "/usr/local/bin/postgres-entrypoint.sh"]
