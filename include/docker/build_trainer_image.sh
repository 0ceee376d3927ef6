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
#   3. docker build with OFFLINE=1: pip installs with --no-index from that wheelhouse.
# --online: GPU hosts with a registry: default BASE_IMAGE (PyTorch CUDA runtime) and the
#   package index; the wheelhouse then holds only the mlops_loop wheel.
#
# Usage: include/docker/build_trainer_image.sh [--online] [--force]
# Env:   TRAINER_IMAGE (default mlops-loop/trainer), BASE_IMAGE, PYTHON (host python with pip),
#        TORCH_WHEEL (default /opt/wheels/torch-<pinned version>+cpu-*.whl)
# Prints the built tag as the last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "${repo}"

online=0
force=0
for arg in "$@"; do
    case "${arg}" in
        --online) online=1 ;;
        --force) force=1 ;;
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
context=$(mktemp -d "${repo}/.local/trainer-context.XXXXXX")
trap 'rm -rf "${context}"' EXIT
mkdir -p "${context}/wheelhouse"
cp constraints.txt "${context}/constraints.txt"

# The package's own wheel (always; it is what changes between builds).
"${python}" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "${context}/wheelhouse" . \
    >&2

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
        # Resolve the trainer extra (without Airflow) under the project's pins; the
        # project wheel itself is rebuilt per image, so drop it from the cache.
        "${python}" -m pip wheel --quiet --wheel-dir "${cache}" \
            --constraint constraints.txt "${torch_wheel}" ".[trainer]" >&2
        rm -f "${cache}"/mlops_loop-*.whl
        touch "${cache}/.complete"
    fi
    # Hard links: no copy of ~1 GB of wheels into the build context.
    ln "${cache}"/*.whl "${context}/wheelhouse/" 2>/dev/null || cp "${cache}"/*.whl "${context}/wheelhouse/"
    build_args+=(--build-arg "BASE_IMAGE=${base}" --build-arg OFFLINE=1)
elif [ -n "${BASE_IMAGE:-}" ]; then
    build_args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
fi

code_version=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "build_trainer_image.sh: docker build ${tag}" >&2
docker build --quiet "${build_args[@]}" \
    --label "org.opencontainers.image.revision=${code_version}" \
    --label "mlops-loop.source-hash=${source_hash}" \
    -f "${dockerfile}" -t "${tag}" -t "${name}:latest${mode_suffix}" "${context}" >&2

echo "build_trainer_image.sh: built ${tag} in $(( $(date +%s) - started ))s" \
     "($(docker image inspect --format '{{.Size}}' "${tag}" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
echo "${tag}"
