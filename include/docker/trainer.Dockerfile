# Trainer image: the mlops-loop package with its [trainer] extra and WITHOUT Airflow.
# Runs `python -m mlops_loop.training <train|evaluate|score> --request ... --result ...`.
#
# Build context: a folder holding
#   wheelhouse/       the mlops_loop wheel, plus every dependency wheel when OFFLINE=1
#   constraints.txt   the project's pins
# include/docker/build_trainer_image.sh assembles that folder and runs the build.
#
# BASE_IMAGE: an official PyTorch CUDA runtime image by default (GPU hosts: its torch is
# reused through --system-site-packages, so nothing CUDA-sized is downloaded again).
# Hosts without a registry: build mlops-loop/base:bookworm-py311 with
# include/docker/build_base_image.sh and pass it here with OFFLINE=1.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime

FROM ${BASE_IMAGE} AS build
# OFFLINE=1: install only from wheelhouse/ (no index). OFFLINE=0: the index resolves
# what the wheelhouse lacks; torch already in the base image is kept.
ARG OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# One layer: venv, install, then checks and trimming. OFFLINE=0 drops the torch pin so the
# base image's CUDA torch is kept; the install must not bring Airflow in (core/ and
# training/ run without it); test suites shipped inside wheels are never imported.
COPY wheelhouse/ /tmp/wheelhouse/
COPY constraints.txt /tmp/constraints.txt
RUN set -eux; \
    python3 -m venv --system-site-packages /opt/venv; \
    if [ "${OFFLINE}" = "1" ]; then \
        index_args="--no-index"; \
        cp /tmp/constraints.txt /tmp/pins.txt; \
    else \
        index_args=""; \
        grep -v -E '^torch==' /tmp/constraints.txt > /tmp/pins.txt; \
    fi; \
    wheel=$(ls /tmp/wheelhouse/mlops_loop-*.whl); \
    /opt/venv/bin/pip install ${index_args} --find-links /tmp/wheelhouse \
        --constraint /tmp/pins.txt "${wheel}[trainer]"; \
    if /opt/venv/bin/python -c "import airflow" 2>/dev/null; then \
        echo "airflow ended up in the trainer image" >&2; exit 1; \
    fi; \
    for pkg in pandas numpy scipy sklearn pyarrow; do \
        rm -rf /opt/venv/lib/python3*/site-packages/"${pkg}"/tests; \
    done; \
    /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib/python3*/site-packages/mlops_loop

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="mlops-loop trainer" \
      org.opencontainers.image.description="Runs mlops_loop.training (train, evaluate, score) without Airflow"
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin trainer \
    && mkdir -p /mlops/io && chown trainer /mlops/io
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/trainer \
    MPLCONFIGDIR=/tmp/matplotlib \
    GIT_PYTHON_REFRESH=quiet
USER trainer
WORKDIR /home/trainer
ENTRYPOINT ["python", "-m", "mlops_loop.training"]
CMD ["--help"]
