# Trainer image: the mlops-loop package with its [trainer] extra and WITHOUT Airflow.
# Runs `python -m mlops_loop.training <train|evaluate|score> --request ... --result ...`.
#
# Build context (assembled by include/docker/build_trainer_image.sh):
#   requirements.txt  the package's dependencies + [trainer] extra (from pyproject.toml)
#   constraints.txt   the project's pins
#   wheelhouse/       the mlops_loop wheel
#
# BASE_IMAGE: an official PyTorch CUDA runtime image by default (GPU hosts: its torch is
# reused through --system-site-packages, nothing CUDA-sized is downloaded again).
# Hosts without a registry: build mlops-loop/base:bookworm-py311 with
# include/docker/build_base_image.sh and pass it with OFFLINE=1 and WHEELHOUSE_URL, a
# find-links page with every dependency wheel (the build script serves one on 127.0.0.1
# and builds with --network host, so the wheels never land in an image layer).
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG OFFLINE=0
ARG WHEELHOUSE_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1

# Layer 1, the dependencies: cached until requirements, pins, base image or build args
# change, so a change to the package's own code only redoes layer 2.
# OFFLINE=1 installs from the wheelhouse only; OFFLINE=0 uses the index and drops the
# torch pin so the base image's CUDA torch is kept. The result must not contain Airflow
# (core/ and training/ run without it). Test suites inside wheels are never imported.
COPY requirements.txt constraints.txt /tmp/mlops-loop/
RUN set -eux; \
    python3 -m venv --system-site-packages /opt/venv; \
    if [ "${OFFLINE}" = "1" ]; then \
        test -n "${WHEELHOUSE_URL}"; \
        index_args="--no-index --find-links ${WHEELHOUSE_URL}"; \
        cp /tmp/mlops-loop/constraints.txt /tmp/mlops-loop/pins.txt; \
    else \
        index_args=""; \
        grep -v -E '^torch==' /tmp/mlops-loop/constraints.txt > /tmp/mlops-loop/pins.txt; \
    fi; \
    /opt/venv/bin/pip install ${index_args} --constraint /tmp/mlops-loop/pins.txt \
        --requirement /tmp/mlops-loop/requirements.txt; \
    if /opt/venv/bin/python -c "import airflow" 2>/dev/null; then \
        echo "airflow ended up in the trainer image" >&2; exit 1; \
    fi; \
    for pkg in pandas numpy scipy sklearn pyarrow; do \
        rm -rf /opt/venv/lib/python3*/site-packages/"${pkg}"/tests; \
    done; \
    useradd --create-home --uid 10001 --shell /usr/sbin/nologin trainer; \
    mkdir -p /mlops/io; chown trainer /mlops/io

# Layer 2, the package itself (small; its dependencies are all in layer 1).
COPY wheelhouse/ /tmp/mlops-loop/wheelhouse/
RUN set -eux; \
    /opt/venv/bin/pip install --no-index --no-deps /tmp/mlops-loop/wheelhouse/mlops_loop-*.whl; \
    if [ "${OFFLINE}" = "1" ]; then /opt/venv/bin/pip check; fi; \
    rm -rf /tmp/mlops-loop

LABEL org.opencontainers.image.title="mlops-loop trainer" \
      org.opencontainers.image.description="Runs mlops_loop.training (train, evaluate, score) without Airflow"
# The operators run this image with a read-only root filesystem and a tmpfs at /tmp, as a
# non-root uid: this user (numeric, so `docker inspect` tells the operator its uid), or
# the worker's own uid:gid when the worker is not root. HOME and the working folder are
# therefore on the tmpfs (the operators also set HOME=/tmp).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    GIT_PYTHON_REFRESH=quiet
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "mlops_loop.training"]
CMD ["--help"]
