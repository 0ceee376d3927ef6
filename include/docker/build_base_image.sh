#!/usr/bin/env bash
# Build the trainer's base image WITHOUT an image registry:
#   debootstrap a minimal Debian bookworm with Python 3.11 and venv support, then
#   `docker import` the root filesystem as a local image.
#
# Python 3.11 in bookworm matches the host's CPython 3.11, so wheels built or downloaded
# on the host install in the image. On hosts that can pull images, skip this script and
# build the trainer with its default BASE_IMAGE (an official PyTorch CUDA runtime image).
#
# Usage: include/docker/build_base_image.sh [--force]
# Env:   BASE_IMAGE (default mlops-loop/base:bookworm-py311)
#        DEBIAN_MIRROR (default: first deb.debian.org-style URI in apt's sources, else
#        http://deb.debian.org/debian)
set -euo pipefail

image="${BASE_IMAGE:-mlops-loop/base:bookworm-py311}"
force="${1:-}"

if [ "${force}" != "--force" ] && docker image inspect "${image}" >/dev/null 2>&1; then
    echo "build_base_image.sh: ${image} exists, skipping (pass --force to rebuild)"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build_base_image.sh: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "${mirror}" ]; then
    # The mirror apt already uses (deb822 "URIs:" or one-line "deb URI suite ...").
    mirror=$(
        { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
          grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
        | grep -v -- '-security' | grep -i debian | head -n1 || true
    )
    mirror="${mirror:-http://deb.debian.org/debian}"
fi

rootfs=$(mktemp -d /tmp/mlops-loop-rootfs.XXXXXX)
cleanup() { rm -rf "${rootfs}"; }
trap cleanup EXIT

started=$(date +%s)
echo "build_base_image.sh: debootstrap bookworm from ${mirror} into ${rootfs}"
# python3-venv brings ensurepip's pip wheel; libgomp1 is the OpenMP runtime that
# numerical wheels expect on the system; ca-certificates for HTTPS endpoints.
debootstrap --variant=minbase \
    --include=python3,python3-venv,libgomp1,ca-certificates \
    bookworm "${rootfs}" "${mirror}" >/tmp/mlops-loop-debootstrap.log 2>&1 || {
        echo "build_base_image.sh: debootstrap failed; last lines:" >&2
        tail -n 30 /tmp/mlops-loop-debootstrap.log >&2
        exit 1
    }

# Slim the root filesystem: package caches, docs, man pages, locales other than C.
rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/* \
       "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*

tar -C "${rootfs}" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "${image}" >/dev/null

echo "build_base_image.sh: built ${image} in $(( $(date +%s) - started ))s"
docker image ls "${image}"
