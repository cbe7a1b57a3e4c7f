"""KFP component: validate and split (thin wrapper around :func:`textclf.validate.validate_and_split`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_split_op(
    dataset: Input[Dataset],
    validation_fraction: float,
    max_train_rows: int,
    max_test_rows: int,
    max_invalid_fraction: float,
    seed: int,
    splits: Output[Dataset],
    report: Output[Markdown],
) -> NamedTuple("ValidateOutputs", test_set_sha256=str, train_rows=int, leaked_rows_removed=int):
    """Drop unusable rows, duplicates and train/test leakage; split train/validation, stratified and seeded.

    Args:
        dataset: Output of the ingest component.
        validation_fraction: Share of training rows held out for validation.
        max_train_rows: Cap on train + validation rows (stratified); 0 keeps all.
        max_test_rows: Cap on test rows (stratified); 0 keeps the whole test set.
        max_invalid_fraction: Above this share of empty/garbled rows in a file, fail instead of dropping them.
        seed: Seed for sampling and splitting.
        splits: Output directory: ``train.parquet``, ``validation.parquet``, ``test.parquet``, ``labels.json``,
            ``validation_report.json``.
        report: The validation report as Markdown (shown in the KFP UI).

    Returns:
        test_set_sha256: Fingerprint of the test rows used, recorded in the run's metadata.
        train_rows: Rows left for training.
        leaked_rows_removed: Training rows removed because they also appear in the test set.
    """
    import shutil
    from collections import namedtuple

    from textclf.config import SplitConfig
    from textclf.validate import validate_and_split
    from textclf.validate.validate import REPORT_MARKDOWN_FILE

    config = SplitConfig(
        validation_fraction=float(validation_fraction), max_train_rows=int(max_train_rows),
        max_test_rows=int(max_test_rows), max_invalid_fraction=float(max_invalid_fraction), seed=int(seed),
    )
    result = validate_and_split(dataset.path, config, splits.path)
    shutil.copy(result.output_dir / REPORT_MARKDOWN_FILE, report.path)
    fingerprints = result.report["fingerprints"]
    splits.metadata.update({"rows": result.report["rows_out"], **fingerprints})
    outputs = namedtuple("ValidateOutputs", ["test_set_sha256", "train_rows", "leaked_rows_removed"])
    return outputs(
        fingerprints["test_set_sha256"], result.report["rows_out"]["train"],
        result.report["leakage"]["removed_from_train"],
    )
