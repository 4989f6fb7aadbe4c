"""Typed parameters of the retail-sales engine, one schema per task.

The sample recipe's keys keep their names and meaning where they fit this model:
`learning_rate` is the optimiser's step size; `n_estimators` is the number of bagged networks in
the ensemble (trained together as one batched model); `max_depth` is the number of hidden layers.
"""
from __future__ import annotations

from datetime import date
from typing import Literal, Optional

from pydantic import Field, field_validator

from runtime.engine import EngineParams

from .schema import DEFAULT_INPUT_FEATURES, METRIC_NAMES


class RetailCommonParams(EngineParams):
    """Keys every task of the sample recipe carries."""

    target: str = Field("weeklySales", alias="ACP_DSW_TARGET_FEATURES",
                        description="The column to forecast one week ahead")
    feature_update_support: bool = Field(False, alias="ACP_DSW_FEATURE_UPDATE_SUPPORT")
    tenantId: Optional[str] = None

    @field_validator("target")
    @classmethod
    def _one_target(cls, value: str) -> str:
        value = value.strip()
        if not value or "," in value:
            raise ValueError("ACP_DSW_TARGET_FEATURES takes exactly one column name")
        return value


class FeaturePipelineParams(RetailCommonParams):
    """The feature pipeline has no knobs beyond the target: its features are fixed and documented."""

    trainingDataSetId: Optional[str] = None
    featuresDataSetId: Optional[str] = Field(None, description="Where the features are written")


class ForecastTrainParams(RetailCommonParams):
    """Train keys shared by the retail engines (this one and retail-sales-spark): evaluation,
    data set, seed and the sample recipe's split. Each engine adds its model's knobs and its
    default `ACP_DSW_INPUT_FEATURES`."""

    label_column: Optional[str] = Field(None, alias="evaluation.labelColumn",
                                        description="Ground truth column; default <target>Ahead")
    metrics: str = Field(",".join(METRIC_NAMES), alias="evaluation.metrics")
    training_schema: Optional[str] = Field(None, alias="ACP_DSW_TRAINING_XDM_SCHEMA")
    seed: int = 0
    trainingDataSetId: Optional[str] = None
    # The sample recipe's evaluation split; train_start/train_end bound the rows trained on
    # (by row date), validation_start is where evaluate's rows begin.
    train_start: Optional[date] = date(2010, 2, 12)
    train_end: Optional[date] = date(2012, 1, 27)
    validation_start: Optional[date] = date(2012, 2, 3)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: str) -> str:
        names = [m.strip().upper() for m in value.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(METRIC_NAMES)}")
        return ",".join(names)

    def input_feature_names(self) -> list[str]:
        return [name.strip() for name in getattr(self, "input_features", "").split(",")
                if name.strip()]

    def metric_names(self) -> list[str]:
        return [m for m in self.metrics.split(",") if m]


class TrainParams(ForecastTrainParams):
    learning_rate: float = Field(0.01, gt=0, le=1.0)
    n_estimators: int = Field(8, ge=1, le=256, description="Bagged networks in the ensemble")
    max_depth: int = Field(2, ge=0, le=8, description="Hidden layers of each network (0: linear)")
    input_features: str = Field(",".join(DEFAULT_INPUT_FEATURES), alias="ACP_DSW_INPUT_FEATURES",
                                description="Comma-separated feature columns given to the model")
    epochs: int = Field(50, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1)
    hidden_size: int = Field(64, ge=1, le=4096)
    weight_decay: float = Field(1e-4, ge=0)
    validation_every_epochs: int = Field(
        1, ge=0, le=10_000, description="Report the validation metrics every N epochs as a "
        "per-epoch curve (the last epoch always); 0: only the final evaluation")
    # A validation set as large as the training set costs a third of an epoch per check on
    # the CPU; 4,096 rows cost about 2% of a 45,000-row epoch, and MAPE on them is within a few
    # percent of the whole set's, the same rows every epoch (so the curve's shape is kept).
    validation_sample_rows: int = Field(
        4096, ge=0, description="Validation rows the per-epoch curve is computed on: when there "
        "are more, a fixed random sample of this many (drawn once with `seed`, the same rows "
        "every epoch, so epochs compare like with like); 0: every validation row each epoch. "
        "The run's final metrics (evaluate) always use every validation row")
    # Speed options. fp32 with compile off and tf32 off gives the same numbers on every device
    # up to float rounding; bf16 and tf32 round matmul inputs (results differ slightly, in the
    # 3rd-4th significant digit of the loss); compile changes only the speed.
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: the forward pass under bfloat16 autocast (CUDA, or CPU with "
        "bf16 support); changes results slightly")
    compile: bool = Field(False, description="torch.compile the training step's network "
                                             "(pays a compile once; same results)")
    tf32: bool = Field(True, description="CUDA: let fp32 matmuls use TF32 tensor cores (Ampere "
                                         "and later; changes results slightly); no effect on CPU")
    chunk_rows: Optional[int] = Field(
        None, ge=0, description="Rows of whole stores whose features are built at a time: memory "
        "is a function of the training rows' feature matrix, not of the data set (same model); "
        "0: the whole data set at once; unset: sized from the memory available")


class ScoreDataParams(RetailCommonParams):
    """Score keys shared by the retail engines."""

    scoringDataSetId: Optional[str] = None
    scoringResultsDataSetId: Optional[str] = None
    scoring_results_schema: Optional[str] = Field(None, alias="ACP_DSW_SCORING_RESULTS_XDM_SCHEMA")


class ScoreParams(ScoreDataParams):
    batch_size: int = Field(4096, ge=1, description="Rows per inference batch; unset: sized "
                            "from the model's width and the CPU's L2 cache (65,536 rows on CUDA)")
    chunk_rows: Optional[int] = Field(
        None, ge=0, description="Rows scored at a time: memory is a function of it, not of the "
        "data set (same scores); 0: the whole data set at once; unset: sized from the memory "
        "available")
