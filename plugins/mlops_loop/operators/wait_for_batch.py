"""WaitForBatchSensor: wait until the batch for a date has landed.

Thin adapter over :func:`mlops_loop.core.ingest.find_batch`; all logic lives there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.ingest import BatchLookup


class WaitForBatchSensor(BaseSensorOperator):
    """Wait for the batch of a date to land under the config's ``source.uri``.

    It looks every ``source.poke_interval_seconds`` and, in the default ``reschedule``
    mode, frees its worker slot between looks (this works with every executor and needs
    no triggerer). Each look logs the files it looked for and what it found.

    After ``source.wait_timeout_minutes`` without a batch, ``source.on_missing`` decides:
    ``skip`` skips the task and, through the default trigger rule, the tasks after it, so
    the run ends without a failure; ``fail`` fails the task (no retry) with a message
    naming the files it looked for.

    A date given explicitly (``ds``, a trigger form's date) is a person asking for that
    date: the sensor looks once and fails at once when nothing has landed, whatever
    ``on_missing`` says, so the answer comes in seconds rather than after the timeout.

    :param config_path: path of the dataset config YAML. (templated)
    :param ds: date ``YYYY-MM-DD`` to wait for; None or empty: the run's logical date, else
        the day it runs for (``run_after``), and the sensor waits. (templated)
    :param poke_interval: seconds between looks; None: ``source.poke_interval_seconds``.
    :param timeout: seconds to wait in all; None: ``source.wait_timeout_minutes``.
    :return: ``BatchLookup.to_xcom()``: dataset, ds, source_uri, files.
    """

    template_fields: Sequence[str] = ("config_path", "ds")
    ui_color = "#eef6fb"

    def __init__(
        self,
        *,
        config_path: str,
        ds: str | None = None,
        poke_interval: timedelta | float | None = None,
        timeout: timedelta | float | None = None,
        mode: str = "reschedule",
        **kwargs: Any,
    ) -> None:
        # The config's values replace the placeholders in execute(), when the config is
        # loaded and validated; parsing the DAG file never reads it.
        super().__init__(
            poke_interval=60 if poke_interval is None else poke_interval,
            timeout=0 if timeout is None else timeout,
            mode=mode,
            **kwargs,
        )
        self.config_path = config_path
        self.ds = ds
        self.poke_interval_from_config = poke_interval is None
        self.timeout_from_config = timeout is None
        # Set by execute() before the first look; poke() runs inside execute().
        self._config: DatasetConfig | None = None
        self._ds = ""

    def execute(self, context: Context) -> Any:
        from airflow.sdk.exceptions import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )

        from mlops_loop.core.config import given, load_config, run_ds

        config = load_config(self.config_path)
        ds = run_ds(context, self.ds)
        self._config, self._ds = config, ds
        source = config.source
        if self.poke_interval_from_config:
            self.poke_interval = source.poke_interval_seconds
        if self.timeout_from_config:
            self.timeout = source.wait_timeout_minutes * 60

        if given(self.ds):
            lookup = self._look()
            if lookup.found:
                return lookup.to_xcom()
            raise AirflowFailException(
                f"no batch for {config.name} ds={ds}: looked for {lookup.looked_for}"
                f"{_others(lookup)}. The date was given explicitly, so the run did not wait; "
                "land the batch and trigger it again."
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            lookup = self._look(log=False)
            if lookup.found:  # landed between the last look and the timeout
                return lookup.to_xcom()
            message = (
                f"no batch for {config.name} ds={ds} after waiting "
                f"{_minutes(self.timeout)}: looked for {lookup.looked_for}{_others(lookup)} "
                f"(source.on_missing: {source.on_missing})"
            )
            self.log.warning("%s", message)
            if source.on_missing == "skip":
                raise AirflowSkipException(message) from exc
            raise AirflowFailException(message) from exc

    def poke(self, context: Context) -> PokeReturnValue:
        lookup = self._look()
        return PokeReturnValue(is_done=lookup.found, xcom_value=lookup.to_xcom())

    def _look(self, *, log: bool = True) -> BatchLookup:
        from mlops_loop.core.ingest import find_batch
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        config = self._config
        assert config is not None, "poke() runs inside execute(), which loads the config"
        lookup = find_batch(config, self._ds, credentials=dataset_s3_credentials(config))
        if log or lookup.found:
            self.log.info("%s", lookup.describe())
        return lookup


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


def _others(lookup: BatchLookup) -> str:
    return f"; found only {list(lookup.others[:5])}" if lookup.others else ""
