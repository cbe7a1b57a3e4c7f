"""Ingest stage: dataset URI -> canonical parquet splits."""

from textclf.ingest.ingest import DatasetFormat, IngestResult, ingest_dataset

__all__ = ["DatasetFormat", "IngestResult", "ingest_dataset"]
