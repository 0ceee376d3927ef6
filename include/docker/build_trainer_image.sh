#!/usr/bin/env bash
# Build the trainer image `mlops-loop/trainer:<content hash>` (+ `:latest`).
#
# The tag is a hash of everything that goes into the image: the package sources,
# pyproject.toml, constraints.txt, this script and the Dockerfile. When an image with that
# tag exists the whole build is skipped, so a re-run with unchanged inputs costs seconds.
#
# Default (offline, for hosts without an image registry):
#   1. the base image mlops-loop/base:bookworm-py311 (include/docker/build_base_image.sh);
#   2. a wheelhouse built with the host's pip from constraints.txt (cached under
#      .local/wheelhouse/<hash of pyproject+constraints>), torch taken from the on-disk CPU
#      wheel (/opt/wheels), never a CUDA build;
#   3. docker build with OFFLINE=1: pip installs with --no-index from that wheelhouse,
#      served on 127.0.0.1 for the duration of the build (so no wheel lands in a layer);
#      dependencies and the package are separate layers, so a code change rebuilds only
#      the small package layer.
# --online: GPU hosts with a registry: default BASE_IMAGE (PyTorch CUDA runtime) and the
#   package index; the wheelhouse then holds only the mlops_loop wheel.
#
# Usage: include/docker/build_trainer_image.sh [--online] [--force] [--no-cache]
#   --force: build even when the tag exists; --no-cache: also without Docker's layer cache
# Env:   TRAINER_IMAGE (default mlops-loop/trainer), BASE_IMAGE, PYTHON (host python with pip),
#        TORCH_WHEEL (default /opt/wheels/torch-<pinned version>+cpu-*.whl)
# Prints the built tag as the last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "${repo}"

online=0
force=0
no_cache=()
for arg in "$@"; do
    case "${arg}" in
        --online) online=1 ;;
        --force) force=1 ;;
        --no-cache) force=1; no_cache=(--no-cache) ;;
        *) echo "build_trainer_image.sh: unknown argument ${arg}" >&2; exit 2 ;;
    esac
done

name="${TRAINER_IMAGE:-mlops-loop/trainer}"
python="${PYTHON:-${repo}/.local/venv/bin/python}"
[ -x "${python}" ] || python=python3
dockerfile=include/docker/trainer.Dockerfile

# Content hash of what runs in the container (sorted file list, then contents): the
# package's top-level modules, core/ and training/. operators/ and DAG-side code are in
# the wheel too but never run there, so changing them does not force a rebuild.
source_hash=$(
    {
        { find plugins/mlops_loop -maxdepth 1 -type f -name '*.py'
          find plugins/mlops_loop/core plugins/mlops_loop/training -type f -name '*.py' \
              -not -path '*/__pycache__/*'; } | LC_ALL=C sort
        printf '%s\n' pyproject.toml constraints.txt "${dockerfile}" include/docker/build_trainer_image.sh
    } | while read -r f; do printf '%s\n' "${f}"; cat "${f}"; done | sha256sum | cut -c1-12
)
mode_suffix=$([ "${online}" = 1 ] && echo "-cuda" || echo "")
tag="${name}:${source_hash}${mode_suffix}"

if [ "${force}" = 0 ] && docker image inspect "${tag}" >/dev/null 2>&1; then
    docker tag "${tag}" "${name}:latest${mode_suffix}"
    echo "build_trainer_image.sh: ${tag} is up to date, skipping the build" >&2
    echo "${tag}"
    exit 0
fi

started=$(date +%s)
mkdir -p "${repo}/.local"
context=$(mktemp -d "${repo}/.local/trainer-context.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "${server_pid}" ]; then kill "${server_pid}" 2>/dev/null || true; fi
    rm -rf "${context}"
}
trap cleanup EXIT
mkdir -p "${context}/wheelhouse"
cp constraints.txt "${context}/constraints.txt"
# The package's dependencies and [trainer] extra, read from pyproject.toml: the image's
# dependency layer is keyed on this file, not on the package's code.
"${python}" - >"${context}/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["trainer"]]))
PY

# The package's own wheel (always; it is what changes between builds), built from a clean
# copy of the sources so no stale build/ folder can leak removed modules into it.
src="${context}/src"
mkdir -p "${src}/plugins"
cp pyproject.toml README.md "${src}/"
cp -r plugins/mlops_loop "${src}/plugins/"
find "${src}" -name '__pycache__' -type d -prune -exec rm -rf {} +
"${python}" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "${context}/wheelhouse" "${src}" \
    >&2
rm -rf "${src}"

build_args=()
if [ "${online}" = 0 ]; then
    base="${BASE_IMAGE:-mlops-loop/base:bookworm-py311}"
    if ! docker image inspect "${base}" >/dev/null 2>&1; then
        BASE_IMAGE="${base}" bash include/docker/build_base_image.sh >&2
    fi
    torch_pin=$(grep -E '^torch==' constraints.txt | cut -d= -f3)
    torch_wheel="${TORCH_WHEEL:-$(ls /opt/wheels/torch-"${torch_pin}"+cpu-*.whl 2>/dev/null | head -n1 || true)}"
    if [ -z "${torch_wheel}" ] || [ ! -f "${torch_wheel}" ]; then
        echo "build_trainer_image.sh: no CPU torch wheel for torch==${torch_pin} (set TORCH_WHEEL)" >&2
        exit 1
    fi
    deps_hash=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
    cache="${repo}/.local/wheelhouse/${deps_hash}"
    if [ ! -f "${cache}/.complete" ]; then
        echo "build_trainer_image.sh: building the dependency wheelhouse in ${cache}" >&2
        rm -rf "${cache}" && mkdir -p "${cache}"
        # Resolve the trainer extra (without Airflow) under the project's pins, torch from
        # the on-disk CPU wheel.
        "${python}" -m pip wheel --quiet --wheel-dir "${cache}" \
            --constraint constraints.txt --requirement "${context}/requirements.txt" "${torch_wheel}" \
            2> >(grep -v "^WARNING: Location" >&2)
        touch "${cache}/.complete"
    fi
    # Serve the wheelhouse to the build on 127.0.0.1 (the build runs with --network host):
    # no wheel is copied into the build context or an image layer. The port is fixed
    # because it is part of the dependency layer's cache key.
    port="${WHEELHOUSE_PORT:-38517}"
    "${python}" -m http.server "${port}" --bind 127.0.0.1 --directory "${cache}" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
        "${python}" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${port}/')" \
            2>/dev/null && break
        sleep 0.2
    done
    if ! kill -0 "${server_pid}" 2>/dev/null; then
        echo "build_trainer_image.sh: cannot serve the wheelhouse on 127.0.0.1:${port} (set WHEELHOUSE_PORT)" >&2
        exit 1
    fi
    build_args+=(--network host --build-arg "BASE_IMAGE=${base}" --build-arg OFFLINE=1
                 --build-arg "WHEELHOUSE_URL=http://127.0.0.1:${port}/")
elif [ -n "${BASE_IMAGE:-}" ]; then
    build_args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
fi

code_version=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "build_trainer_image.sh: docker build ${tag}" >&2
DOCKER_BUILDKIT=0 docker build --quiet "${no_cache[@]}" "${build_args[@]}" \
    --label "org.opencontainers.image.revision=${code_version}" \
    --label "mlops-loop.source-hash=${source_hash}" \
    -f "${dockerfile}" -t "${tag}" -t "${name}:latest${mode_suffix}" "${context}" \
    2> >(grep -v -E "(legacy builder is deprecated|Install the buildx|docs.docker.com/go/buildx|BuildKit is currently disabled|environment-variable\.)" >&2) \
    >/dev/null

# Keep the three newest content-hash tags; older ones only differ in the package layer.
# (`docker rmi` without -f leaves an image that a container still uses.)
docker images --format '{{.Tag}}' "${name}" | grep -E '^[0-9a-f]{12}(-cuda)?$' | tail -n +4 \
    | while read -r old; do docker rmi "${name}:${old}" >/dev/null 2>&1 || true; done

echo "build_trainer_image.sh: built ${tag} in $(( $(date +%s) - started ))s" \
     "($(docker image inspect --format '{{.Size}}' "${tag}" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
echo "${tag}"
