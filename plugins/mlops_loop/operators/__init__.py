"""The package's Airflow operators, one per stage.

Imports are lazy: ``from mlops_loop.operators import IngestSnapshotOperator`` loads only
that operator's module, so a DAG file that uses one stage does not import the others.
To add an operator, add ``"ClassName": "module"`` to ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "AssembleTrainingSetOperator": "training_set",
    "DataQualityOperator": "quality",
    "DockerTrainOperator": "docker_train",
    "DriftMonitorOperator": "drift",
    "EvaluateChallengerOperator": "evaluate",
    "IngestSnapshotOperator": "ingest",
    "PromoteModelOperator": "promote",
    "PromotionApprovalOperator": "approval",
    "RequestRetrainingOperator": "drift",
    "RollbackChampionOperator": "promote",
    "TrainerContainerOperator": "trainer",
    "WaitForBatchSensor": "wait_for_batch",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from mlops_loop.operators.approval import (
        PromotionApprovalOperator as PromotionApprovalOperator,
    )
    from mlops_loop.operators.docker_train import DockerTrainOperator as DockerTrainOperator
    from mlops_loop.operators.drift import DriftMonitorOperator as DriftMonitorOperator
    from mlops_loop.operators.drift import (
        RequestRetrainingOperator as RequestRetrainingOperator,
    )
    from mlops_loop.operators.evaluate import (
        EvaluateChallengerOperator as EvaluateChallengerOperator,
    )
    from mlops_loop.operators.ingest import IngestSnapshotOperator as IngestSnapshotOperator
    from mlops_loop.operators.promote import PromoteModelOperator as PromoteModelOperator
    from mlops_loop.operators.promote import (
        RollbackChampionOperator as RollbackChampionOperator,
    )
    from mlops_loop.operators.quality import DataQualityOperator as DataQualityOperator
    from mlops_loop.operators.trainer import (
        TrainerContainerOperator as TrainerContainerOperator,
    )
    from mlops_loop.operators.training_set import (
        AssembleTrainingSetOperator as AssembleTrainingSetOperator,
    )
    from mlops_loop.operators.wait_for_batch import WaitForBatchSensor as WaitForBatchSensor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
