#!/usr/bin/env bash
# Build the images of the compose stack (docker-compose.yml + docker-compose.local.yml),
# each tagged with a hash of what goes into it (+ `:latest`, the tag the compose files use):
#
#   mlops-loop/airflow   Airflow 3.3 + the package + CeleryExecutor extras (api-server,
#                        scheduler, dag-processor, triggerer, workers, init, MLflow server)
#   mlops-loop/postgres  Debian bookworm's PostgreSQL 15   (postgres.Dockerfile)
#   mlops-loop/redis     Debian bookworm's redis-server    (redis.Dockerfile)
#   mlops-loop/s3        moto_server, an S3-compatible server (s3.Dockerfile, on top of the
#                        airflow image; the local stand-in for MinIO)
#
# When an image with its hash tag exists its build is skipped, so a re-run with unchanged
# inputs costs seconds; a change to the package's code rebuilds only the airflow image's
# small package layer (dependencies are a separate, cached layer).
#
# Default (offline, for hosts without an image registry): every image starts FROM
# mlops-loop/base:bookworm-py311 (include/docker/build_base_image.sh). Builds run with
# --network host: apt inside the build reaches the host's Debian mirror, and pip installs
# with --no-index from a wheelhouse built by the host's pip (cached under
# .local/wheelhouse-stack/<hash>) and served on 127.0.0.1 during the build, so no wheel
# lands in a layer.
# --online: hosts with a registry and the package index: BASE_IMAGE python:3.11-slim-bookworm
#   and pip from the index (docker-compose.yml alone then also needs this airflow image).
#
# Usage: include/docker/build_stack_images.sh [--online] [--force] [IMAGE...]
#   IMAGE: any of postgres redis airflow s3 (default: all; s3 needs airflow)
# Env:   BASE_IMAGE, PYTHON (host python with pip), WHEELHOUSE_PORT (default 38518)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "${repo}"

online=0
force=0
images=()
for arg in "$@"; do
    case "${arg}" in
        --online) online=1 ;;
        --force) force=1 ;;
        airflow|postgres|redis|s3) images+=("${arg}") ;;
        *) echo "build_stack_images.sh: unknown argument ${arg}" >&2; exit 2 ;;
    esac
done
[ "${#images[@]}" -gt 0 ] || images=(postgres redis airflow s3)

python="${PYTHON:-${repo}/.local/venv/bin/python}"
[ -x "${python}" ] || python=python3
if [ "${online}" = 1 ]; then
    base="${BASE_IMAGE:-python:3.11-slim-bookworm}"
else
    base="${BASE_IMAGE:-mlops-loop/base:bookworm-py311}"
    if ! docker image inspect "${base}" >/dev/null 2>&1; then
        BASE_IMAGE="${base}" bash include/docker/build_base_image.sh >&2
    fi
fi
base_id=$(docker image inspect --format '{{.Id}}' "${base}" 2>/dev/null || echo "${base}")

work=$(mktemp -d "${TMPDIR:-/tmp}/mlops-loop-stack.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "${server_pid}" ]; then kill "${server_pid}" 2>/dev/null || true; fi
    rm -rf "${work}"
}
trap cleanup EXIT

hash_files() {  # hash of file names + contents (sorted), the base image id and the mode
    { printf '%s %s\n' "${base_id}" "${online}"
      for f in "$@"; do printf '%s\n' "${f}"; cat "${f}"; done; } | sha256sum | cut -c1-12
}

docker_build() {  # docker_build NAME TAG DOCKERFILE CONTEXT [ARGS...]
    local name=$1 tag=$2 dockerfile=$3 context=$4
    shift 4
    local started
    started=$(date +%s)
    echo "build_stack_images.sh: docker build ${name}:${tag}" >&2
    DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "BASE_IMAGE=${from:-${base}}" "$@" \
        --label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        -f "${dockerfile}" -t "${name}:${tag}" -t "${name}:latest" "${context}" \
        2> >(grep -v -E "(legacy builder is deprecated|Install the buildx|docs.docker.com/go/buildx|BuildKit is currently disabled|environment-variable\.)" >&2) \
        >/dev/null
    echo "build_stack_images.sh: built ${name}:${tag} in $(( $(date +%s) - started ))s" >&2
    # keep the three newest hash tags
    docker images --format '{{.Tag}}' "${name}" | grep -E '^[0-9a-f]{12}$' | tail -n +4 \
        | while read -r old; do docker rmi "${name}:${old}" >/dev/null 2>&1 || true; done
}

up_to_date() {  # up_to_date NAME TAG: tags :latest and says so when the image exists
    if [ "${force}" = 0 ] && docker image inspect "$1:$2" >/dev/null 2>&1; then
        docker tag "$1:$2" "$1:latest"
        echo "build_stack_images.sh: $1:$2 is up to date" >&2
        return 0
    fi
    return 1
}

# The wheelhouse (offline) for the Python images: the package's [celery] extra (Airflow,
# the Celery provider, Redis client, PostgreSQL driver) and moto[server], under
# constraints.txt; torch is not needed on the Airflow side.
requirements() {
    "${python}" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
reqs = [*project["dependencies"], *extras["airflow"]]
reqs += [r for r in extras.get("celery", []) if not r.startswith("mlops-loop")] or [
    "apache-airflow-providers-celery>=3.26", "celery[redis]>=5.5,<5.7", "kombu>=5.5,<5.7",
    "redis>=5", "psycopg2-binary>=2.9"]
# Airflow 3 opens an async engine on its metadata database too: asyncpg for PostgreSQL.
if not any(r.startswith("asyncpg") for r in reqs):
    reqs.append("asyncpg>=0.29")
print("\n".join(reqs))
PY
}
serve_wheelhouse() {
    [ "${online}" = 0 ] || return 0
    [ -z "${server_pid}" ] || return 0
    local deps_hash cache port
    deps_hash=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
    cache="${repo}/.local/wheelhouse-stack/${deps_hash}"
    if [ ! -f "${cache}/.complete" ]; then
        echo "build_stack_images.sh: building the wheelhouse in ${cache}" >&2
        rm -rf "${cache}" && mkdir -p "${cache}"
        requirements >"${work}/all-requirements.txt"
        # moto for the s3 image; async-timeout: redis needs it on the image's Python
        # (bookworm's 3.11.2) even when the host's Python does not.
        printf '%s\n' "moto[server]" "async-timeout>=4.0.3" >>"${work}/all-requirements.txt"
        grep -v -E '^(torch|nvidia-|triton)' constraints.txt >"${work}/pins.txt"
        "${python}" -m pip wheel --quiet --wheel-dir "${cache}" --constraint "${work}/pins.txt" \
            --requirement "${work}/all-requirements.txt" 2> >(grep -v "^WARNING: Location" >&2)
        touch "${cache}/.complete"
        # Older wheelhouses (other pins) are not used again.
        find "${repo}/.local/wheelhouse-stack" -mindepth 1 -maxdepth 1 -type d \
            ! -name "${deps_hash}" -exec rm -rf {} +
    fi
    port="${WHEELHOUSE_PORT:-38518}"
    "${python}" -m http.server "${port}" --bind 127.0.0.1 --directory "${cache}" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
        "${python}" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${port}/')" \
            2>/dev/null && break
        sleep 0.2
    done
    kill -0 "${server_pid}" 2>/dev/null || {
        echo "build_stack_images.sh: cannot serve the wheelhouse on 127.0.0.1:${port}" >&2; exit 1; }
    wheel_args=(--build-arg OFFLINE=1 --build-arg "WHEELHOUSE_URL=http://127.0.0.1:${port}/")
}
wheel_args=(--build-arg OFFLINE=0)

# The apt-based images (postgres, redis) build in the background while the wheelhouse and
# the Python images are made: their time goes to the Debian mirror, the others' to pip.
background=()
for image in "${images[@]}"; do
    case "${image}" in
    postgres)
        tag=$(hash_files include/docker/postgres.Dockerfile include/docker/postgres-entrypoint.sh)
        up_to_date mlops-loop/postgres "${tag}" && continue
        ctx="${work}/postgres" && mkdir -p "${ctx}" && cp include/docker/postgres-entrypoint.sh "${ctx}/"
        docker_build mlops-loop/postgres "${tag}" include/docker/postgres.Dockerfile "${ctx}" &
        background+=($!)
        ;;
    redis)
        tag=$(hash_files include/docker/redis.Dockerfile)
        up_to_date mlops-loop/redis "${tag}" && continue
        ctx="${work}/redis" && mkdir -p "${ctx}"
        docker_build mlops-loop/redis "${tag}" include/docker/redis.Dockerfile "${ctx}" &
        background+=($!)
        ;;
    airflow)
        tag=$(hash_files pyproject.toml constraints.txt include/docker/airflow.Dockerfile \
              include/docker/build_stack_images.sh \
              $(find plugins dags include/config include/expectations -type f \
                    -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort))
        up_to_date mlops-loop/airflow "${tag}" && continue
        serve_wheelhouse
        ctx="${work}/airflow" && mkdir -p "${ctx}/wheelhouse" "${ctx}/include"
        requirements >"${ctx}/requirements.txt"
        grep -v -E '^(torch|nvidia-|triton)' constraints.txt >"${ctx}/constraints.txt"
        # The package's own wheel, from a clean copy of the sources (its own layer).
        src="${work}/src" && mkdir -p "${src}/plugins"
        cp pyproject.toml README.md "${src}/" && cp -r plugins/mlops_loop "${src}/plugins/"
        find "${src}" -name '__pycache__' -type d -prune -exec rm -rf {} +
        "${python}" -m pip wheel --quiet --no-deps --no-build-isolation \
            --wheel-dir "${ctx}/wheelhouse" "${src}" >&2
        cp -r dags plugins "${ctx}/" && cp -r include/config include/expectations "${ctx}/include/"
        find "${ctx}" -name '__pycache__' -type d -prune -exec rm -rf {} +
        docker_build mlops-loop/airflow "${tag}" include/docker/airflow.Dockerfile "${ctx}" "${wheel_args[@]}"
        ;;
    s3)
        # FROM the airflow image: moto adds its few own packages to that venv (the rest,
        # boto3, flask, werkzeug..., is there already), so this build takes seconds.
        airflow_id=$(docker image inspect --format '{{.Id}}' mlops-loop/airflow:latest 2>/dev/null) || {
            echo "build_stack_images.sh: the s3 image needs mlops-loop/airflow:latest; build airflow first" >&2
            exit 1; }
        tag=$( { hash_files include/docker/s3.Dockerfile constraints.txt; echo "${airflow_id}"; } \
              | sha256sum | cut -c1-12)
        up_to_date mlops-loop/s3 "${tag}" && continue
        serve_wheelhouse
        ctx="${work}/s3" && mkdir -p "${ctx}"
        grep -v -E '^(torch|nvidia-|triton)' constraints.txt >"${ctx}/constraints.txt"
        from=mlops-loop/airflow:latest docker_build mlops-loop/s3 "${tag}" include/docker/s3.Dockerfile \
            "${ctx}" "${wheel_args[@]}"
        ;;
    esac
done
for pid in "${background[@]}"; do
    wait "${pid}" || { echo "build_stack_images.sh: a background image build failed" >&2; exit 1; }
done
