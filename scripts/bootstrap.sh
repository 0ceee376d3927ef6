#!/usr/bin/env bash
# Creates .local/venv with the package and its dev + trainer + celery extras, pinned by
# constraints.txt. Idempotent: a re-run with unchanged inputs only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.local/venv
STAMP=$VENV/.installed
mkdir -p .local
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
[ -x $VENV/bin/python ] || python3 -m venv $VENV
[ -x $VENV/bin/uv ] || $VENV/bin/pip install -q "uv>=0.5"
UV="$VENV/bin/uv pip install --python $VENV/bin/python -q"
# torch: take the CPU wheel on this disk when there is one; a bare `torch` from
# PyPI would be a multi-GB CUDA build.
torch_pin=$(grep -E '^torch==' constraints.txt | cut -d= -f3)
wheel=$(ls /opt/wheels/torch-"${torch_pin}"+cpu-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
    $UV -c constraints.txt "$wheel"
fi
$UV -c constraints.txt -e ".[dev,trainer,celery]"
# The development helpers in devtools/ (local servers, sample data) are importable in
# this venv only; the installed package does not contain them.
purelib=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/devtools" > "$purelib/mlops_loop_devtools.pth"
echo "$want" > "$STAMP"
echo "bootstrap: $VENV ready"
