"""docker-compose.yml stays valid for Debian's docker-compose."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (make test installs it)")
def test_compose_file_is_valid():
    proc = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
