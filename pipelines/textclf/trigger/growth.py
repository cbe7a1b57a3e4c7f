"""Data-growth trigger (from the production training system design): retrain when the newly labelled rows exceed a
share (default 10%) of the rows the production model was trained on (train + validation, from its registry
metadata)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textclf.errors import ConfigError, RegistryError


@dataclass(frozen=True)
class GrowthConfig:
    """When new labelled data is enough to retrain.

    Attributes:
        min_growth: New rows / current training rows above which retraining is due (0.10 = 10%).
    """

    min_growth: float = 0.10

    def __post_init__(self) -> None:
        if not self.min_growth > 0:
            raise ConfigError(f"min_growth must be > 0, got {self.min_growth}")


@dataclass(frozen=True)
class DataGrowth:
    """The outcome of one data-growth check."""

    new_rows: int
    current_rows: int
    production_version: str
    ratio: float
    due: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def count_rows(new_rows_uri: str) -> int:
    """Data rows of the ``train`` file under ``new_rows_uri`` (a path, ``s3://`` or ``gs://`` prefix).

    Raises:
        DataValidationError: No such directory or ``train`` file, or an unreadable file.
    """
    from textclf.ingest.ingest import dataset_directory, find_split_file, read_table

    with dataset_directory(new_rows_uri, splits=("train",)) as directory:
        return len(read_table(find_split_file(directory, "train")))


def check_data_growth(new_rows_uri: str, registry_uri: str, config: GrowthConfig | None = None) -> DataGrowth:
    """Compare the newly labelled rows with the production model's training rows.

    Args:
        new_rows_uri: Directory with a ``train`` file of newly labelled rows (the retraining pipeline's
            ``new_rows_uri``).
        registry_uri: Registry holding the production model.
        config: The threshold.

    Returns:
        The counts, their ratio and whether retraining is due.

    Raises:
        RegistryError: No production model (train one first: there is nothing to grow from).
        DataValidationError: The new rows cannot be read.
    """
    from textclf.registry import ModelRegistry

    config = config or GrowthConfig()
    registry = ModelRegistry(registry_uri)
    version = registry.production_version()
    if version is None:
        raise RegistryError(f"registry {registry_uri} has no production model to measure data growth against")
    rows = registry.metadata(version)["dataset"]["rows"]
    current = int(rows.get("train", 0)) + int(rows.get("validation", 0))
    new = count_rows(new_rows_uri)
    ratio = new / current if current else float("inf")
    due = ratio > config.min_growth
    reason = (f"data growth: {new:,} newly labelled rows = {ratio:.1%} of the {current:,} rows {version} was trained "
              f"on ({'>' if due else '<='} {config.min_growth:.0%})")
    return DataGrowth(new, current, version, ratio, due, reason)
