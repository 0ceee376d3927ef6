"""AssembleTrainingSetOperator: the time-split training set from validated snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class AssembleTrainingSetOperator(BaseOperator):
    """Assemble train / valid / holdout from the validated snapshots up to ``until_ds``.

    Thin adapter over :func:`mlops_loop.core.training_set.assemble_training_set`: the
    window comes from the config's ``training.window``; the result is content-addressed
    (same validated inputs, same training set, nothing rewritten). The window never ends
    before the ``ds`` of the asset events that started the run (a drift report's date,
    a validated date), up to the newest validated date; the log says how its end was
    chosen.

    :param config_path: path of the dataset config YAML. (templated)
    :param until_ds: last logical date ``YYYY-MM-DD`` to include; None or empty: the most
        recent validated date. (templated)
    :return: TrainingSet.to_xcom(): sha256, uri, train_uri, valid_uri, holdout_uri, rows,
        members, created, until_ds, window_note.
    """

    template_fields: Sequence[str] = ("config_path", "until_ds")
    ui_color = "#fdf2d0"

    def __init__(self, *, config_path: str, until_ds: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.until_ds = until_ds

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_loop.core.config import given, load_config
        from mlops_loop.core.training_set import assemble_training_set
        from mlops_loop.core.triggers import event_dates
        from mlops_loop.hooks.s3 import dataset_s3_credentials
        from mlops_loop.operators.triggers import trigger_events

        config = load_config(self.config_path)
        until_ds = str(self.until_ds).strip() if given(self.until_ds) else None
        result = assemble_training_set(
            config,
            until_ds=until_ds,
            credentials=dataset_s3_credentials(config),
            must_include_ds=event_dates(trigger_events(context)),
        )
        self.log.info(
            "Training set %s (%s): rows %s from %d validated snapshots; %s",
            result.sha256[:16],
            "new" if result.created else "already assembled",
            result.rows,
            len(result.members),
            result.window_note,
        )
        return result.to_xcom()
