"""One URI layer for every stage, the model registry and the model server: ``file://`` (and bare paths),
``s3://`` (minio client; AWS S3, MinIO, moto) and ``gs://`` (google-cloud-storage; honours STORAGE_EMULATOR_HOST).

Example::

    store = Store("s3://textclf-models/registry")  # settings from the AWS_* / S3_* environment variables
    store.write_bytes("notes/hello.txt", b"hi")
    store.upload_tree("runs/pipeline_root/<run>/export-op/onnx_model", "bundles/run-1")
    download("s3://textclf-models/registry/bundles/run-1", "/mnt/models")
"""

from textclf.storage.base import StorageBackend, VersionedBytes
from textclf.storage.config import FileConfig, GcsConfig, RetryConfig, S3Config
from textclf.storage.store import BACKENDS, Store, backend_for, download, is_remote, local_path, localize, upload
from textclf.storage.uri import Scheme, StorageUri, safe_relative_path

__all__ = [
    "BACKENDS", "FileConfig", "GcsConfig", "RetryConfig", "S3Config", "Scheme", "StorageBackend", "StorageUri",
    "Store", "VersionedBytes", "backend_for", "download", "is_remote", "local_path", "localize", "safe_relative_path",
    "upload",
]
