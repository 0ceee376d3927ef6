"""Fixtures shared by the core tests: a dataset root in a temporary folder and the
credit-default config pointing at it (tests/fixtures/landed_batches.py)."""

from tests.fixtures.landed_batches import config, root

__all__ = ["config", "root"]
