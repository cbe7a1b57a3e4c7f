"""KFP component: ingest (thin wrapper around :func:`textclf.ingest.ingest_dataset`)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from textclf.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_op(
    dataset_uri: str,
    dataset_format: str,
    text_columns: str,
    label_column: str,
    dataset: Output[Dataset],
    new_rows_uri: str = "",
):
    """Read a dataset URI into canonical parquet splits, checking schema, encoding and labels.

    Args:
        dataset_uri: Directory (path, ``file://``, ``s3://`` or ``gs://`` URI) with ``train`` and ``test`` files
            (``.csv``, ``.csv.gz`` or ``.parquet``). Object-store settings come from the environment (``AWS_*`` /
            ``S3_*``, ``STORAGE_EMULATOR_HOST``, a mounted Secret).
        dataset_format: ``auto`` (detected from the header), ``ag_news``, ``arxiv_cs`` or ``generic``.
        text_columns: For ``generic``: comma-separated text columns, joined by a space.
        label_column: For ``generic``: the label column.
        dataset: Output directory: ``train.parquet``, ``test.parquet``, ``labels.json``, ``ingest_report.json``
            (and ``new_rows.parquet`` with ``new_rows_uri``).
        new_rows_uri: Optional directory of newly labelled rows (a ``train`` file in the same format), added to
            the training rows by the validate stage; empty for none.

    Returns:
        Nothing; the ``dataset`` artifact carries the format, class names and row counts in its metadata.
    """
    from textclf.config import IngestConfig, parse_text_columns
    from textclf.ingest import ingest_dataset

    config = IngestConfig(dataset_uri, dataset_format, parse_text_columns(text_columns), label_column,
                          new_rows_uri=new_rows_uri)
    result = ingest_dataset(config, dataset.path)
    dataset.metadata.update(
        {"dataset_format": result.dataset_format.value, "labels": result.labels, "rows": result.rows}
    )
