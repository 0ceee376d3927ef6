"""Library loggers at WARNING while a task works, so its own lines are readable.

Great Expectations alone logs about 220 INFO lines per gate run (most of them while it is
imported); a task log should end with what the task decided, not with that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# Loggers of libraries the stages use whose INFO lines say nothing to a person reading a
# task log. Their warnings and errors still show.
NOISY_LIBRARIES: tuple[str, ...] = (
    "great_expectations",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "fsspec",
    "pyarrow",
    "numexpr",
    "matplotlib",
    "PIL",
    "filelock",
)


class _BelowWarningFrom(logging.Filter):
    """Drops records below WARNING from the named loggers and their children."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.prefixes = tuple(f"{name}." for name in names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not (record.name in self.names or record.name.startswith(self.prefixes))


@contextmanager
def library_logs_at_warning(names: Sequence[str] = NOISY_LIBRARIES) -> Iterator[None]:
    """Inside the block, the named loggers (and their children) log WARNING and above
    only; afterwards their levels are as they were.

    Each logger is set to WARNING (a stricter level is kept), and the root logger's
    handlers drop what such a library's child logger still emits below WARNING: some set
    their own level when imported (Great Expectations sets INFO on one of its modules)."""
    saved: list[tuple[logging.Logger, int]] = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
    drop = _BelowWarningFrom(names)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)
        for logger, level in saved:
            logger.setLevel(level)
