"""The storage layer against real servers: the same tests on the local filesystem, moto's S3 server and
gcp-storage-emulator (all on 127.0.0.1)."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from storage_servers import (  # noqa: F401  (pytest fixtures)
    HOST,
    free_port,
    gcs_server,
    gcs_store,
    make_s3_bucket,
    s3_server,
    s3_store,
    s3_tls_server,
)

from textclf.errors import (
    BucketNotFoundError,
    ConditionalWriteError,
    ConfigError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StoragePathError,
    StorageUnavailableError,
)
from textclf.storage import (
    FileConfig,
    GcsConfig,
    RetryConfig,
    S3Config,
    Scheme,
    StorageUri,
    Store,
    download,
    upload,
)

BACKENDS = ["file", "s3", "gs"]
FILE_CHUNK = 64 << 10
EMULATOR_IGNORES_PRECONDITIONS = (
    "gcp-storage-emulator 2026.7.19 ignores ifGenerationMatch, so a conditional write cannot lose there; "
    "real GCS evaluates it atomically"
)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Store:
    """A fresh, empty prefix on each backend."""
    if request.param == "file":
        return Store(tmp_path / "store" / "prefix", config=FileConfig(chunk_size=FILE_CHUNK))
    if request.param == "s3":
        return s3_store(request.getfixturevalue("s3_server"))
    return gcs_store(request.getfixturevalue("gcs_server"))


def write_tree(root: Path) -> dict[str, bytes]:
    """A small nested directory; returns its files' contents by relative path."""
    files = {
        "model.onnx": os.urandom(3000),
        "labels.json": b'{"labels": ["a", "b"]}',
        "tokenizer/tokenizer.json": b"{}",
        "tokenizer/deeper/vocab.txt": "h\u00e9llo\n".encode(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_bytes_round_trip_and_overwrite(store):
    store.write_bytes("a/b.bin", b"first")
    assert store.read_bytes("a/b.bin") == b"first"
    store.write_bytes("a/b.bin", b"")
    assert store.read_bytes("a/b.bin") == b""
    store.write_bytes("./a//b.bin", b"second")
    assert store.read_bytes("a/b.bin") == b"second"


def test_file_round_trip(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(10_000))
    store.upload_file(source, "files/in.bin")
    target = store.download_file("files/in.bin", tmp_path / "out" / "copy.bin")
    assert target.read_bytes() == source.read_bytes()
    assert not [p for p in target.parent.iterdir() if p.name != "copy.bin"], "no temporary file left behind"


def test_tree_round_trip_listing_and_exists(store, tmp_path):
    files = write_tree(tmp_path / "tree")
    assert store.upload_tree(tmp_path / "tree", "bundle") == sorted(files)
    assert store.list("bundle") == sorted(files)
    assert store.list("bundle/tokenizer") == ["deeper/vocab.txt", "tokenizer.json"]
    assert store.list() == [f"bundle/{name}" for name in sorted(files)]
    assert store.list("nothing-here") == []
    assert store.exists("bundle/labels.json")
    assert not store.exists("bundle/missing.json")
    assert not store.exists("bundle/tokenizer"), "a prefix is not an object"

    assert store.download_tree("bundle", tmp_path / "copy") == sorted(files)
    assert {p.relative_to(tmp_path / "copy").as_posix(): p.read_bytes()
            for p in (tmp_path / "copy").rglob("*") if p.is_file()} == files

    store.delete("bundle/labels.json")
    store.delete("bundle/labels.json")  # absent: no error
    assert not store.exists("bundle/labels.json")


def test_module_level_upload_and_download(store, tmp_path):
    write_tree(tmp_path / "tree")
    config = store.backend.config
    upload(tmp_path / "tree", store.uri("up"), config=config)
    download(store.uri("up"), tmp_path / "down", config=config)
    download(store.uri("up/labels.json"), tmp_path / "one.json", config=config)
    assert (tmp_path / "down" / "tokenizer" / "deeper" / "vocab.txt").read_bytes() == "h\u00e9llo\n".encode()
    assert (tmp_path / "one.json").read_bytes() == b'{"labels": ["a", "b"]}'


def test_large_file_is_streamed_in_chunks(store, tmp_path):
    """A file of many chunks round-trips while Python never holds more than a few chunks of it."""
    if store.root.scheme is Scheme.S3:
        store = Store(store.root, config=store.backend.config.__class__(
            **{**store.backend.config.__dict__, "part_size": 5 << 20, "chunk_size": 1 << 20}))
        chunk = 5 << 20
    else:
        chunk = store.backend.config.chunk_size
    # google-cloud-storage sends objects up to 8 MiB in one request; above that, resumable chunks.
    size = max(8 * chunk, (8 << 20) if store.root.scheme is Scheme.GS else 0) + 12345
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(size // (1 << 20) + 1):
            handle.write(os.urandom(1 << 20))
        handle.truncate(size)
    tracemalloc.start()
    try:
        store.upload_file(source, "big/big.bin")
        store.download_file("big/big.bin", tmp_path / "big.copy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big.copy").read_bytes() == source.read_bytes()
    assert peak < 3 * chunk, f"peak Python allocation {peak} bytes for a {size}-byte file in {chunk}-byte chunks"


def test_missing_object_is_a_clear_error(store, tmp_path):
    with pytest.raises(ObjectNotFoundError, match="nope.bin"):
        store.read_bytes("nope.bin")
    with pytest.raises(ObjectNotFoundError):
        store.download_file("nope.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    with pytest.raises(ObjectNotFoundError, match="no objects below"):
        store.download_tree("empty", tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_missing_bucket_is_a_clear_error(scheme, request):
    if scheme == "s3":
        config = request.getfixturevalue("s3_server").config()
    else:
        config = request.getfixturevalue("gcs_server").config()
    store = Store(f"{scheme}://no-such-bucket-here/x", config=config)
    for operation in (lambda: store.read_bytes("a"), lambda: store.exists("a"), lambda: store.write_bytes("a", b"1")):
        with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
            operation()
    if scheme == "s3":  # the emulator lists a missing bucket as empty
        with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
            store.list()


def test_wrong_s3_secret_is_refused(s3_server):
    bucket = make_s3_bucket(s3_server)
    wrong_secret = Store(f"s3://{bucket}/x", config=s3_server.config(secret_key="not-the-secret"))
    with pytest.raises(StorageAuthError, match="SignatureDoesNotMatch.*AWS_SECRET_ACCESS_KEY"):
        wrong_secret.write_bytes("a", b"1")
    unknown_key = Store(f"s3://{bucket}/x", config=s3_server.config(access_key="AKIANOBODY"))
    with pytest.raises(StorageAuthError, match="InvalidAccessKeyId"):
        unknown_key.read_bytes("a")
    assert Store(f"s3://{bucket}/x", config=s3_server.config()).list() == []


@pytest.mark.parametrize("bad", ["../outside", "a/../../outside", "/etc/passwd", "a\\..\\b", "a/../b"])
def test_paths_escaping_the_prefix_are_refused(store, bad, tmp_path):
    for operation in (
        lambda: store.write_bytes(bad, b"x"),
        lambda: store.read_bytes(bad),
        lambda: store.exists(bad),
        lambda: store.list(bad),
        lambda: store.upload_tree(tmp_path, bad),
        lambda: store.child(bad),
    ):
        with pytest.raises(StoragePathError):
            operation()
    assert store.list() == []


def test_listed_keys_that_escape_are_refused_on_download(s3_server, tmp_path):
    """A bucket holding a key like ``prefix/../../evil`` cannot make download_tree write outside its folder."""
    bucket = make_s3_bucket(s3_server)
    import boto3  # the minio client itself refuses to write such a key

    s3 = boto3.client("s3", endpoint_url=f"http://{s3_server.endpoint}", region_name="us-east-1",
                      aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
    s3.put_object(Bucket=bucket, Key="models/../../evil", Body=b"x")
    store = Store(f"s3://{bucket}/models", config=s3_server.config())
    with pytest.raises(StoragePathError, match=r"\.\."):
        store.download_tree("", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil").exists()


@pytest.fixture
def conditional_store(store, request) -> Store:
    """``store``, with the gs variant marked as an expected failure (the emulator cannot reject a write)."""
    if store.root.scheme is Scheme.GS:
        request.applymarker(pytest.mark.xfail(reason=EMULATOR_IGNORES_PRECONDITIONS, strict=True,
                                              raises=pytest.fail.Exception))
    return store


def test_conditional_write_second_writer_loses(conditional_store):
    store = conditional_store
    first = store.write_conditional("index.json", b"v1", None)
    with pytest.raises(ConditionalWriteError):
        store.write_conditional("index.json", b"intruder", None)
        pytest.fail("write-if-absent over an existing object succeeded")
    current = store.read_versioned("index.json")
    assert current.data == b"v1" and current.token == first
    second = store.write_conditional("index.json", b"v2", current.token)
    with pytest.raises(ConditionalWriteError):
        store.write_conditional("index.json", b"stale", current.token)
        pytest.fail("compare-and-swap with a stale token succeeded")
    assert store.read_versioned("index.json").data == b"v2"
    assert store.read_versioned("index.json").token == second
    store.delete("index.json")
    with pytest.raises(ConditionalWriteError):
        store.write_conditional("index.json", b"v3", second)
        pytest.fail("compare-and-swap on a deleted object succeeded")


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_concurrent_write_if_absent_has_one_winner(backend, request, tmp_path):
    if backend == "file":
        store = Store(tmp_path / "race")
    else:
        store = s3_store(request.getfixturevalue("s3_server"))
    winners, losers = [], []

    def claim(writer: int) -> None:
        try:
            store.write_conditional("claim", str(writer).encode(), None)
            winners.append(writer)
        except ConditionalWriteError:
            losers.append(writer)

    threads = [threading.Thread(target=claim, args=(writer,)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(losers) == 7
    assert store.read_bytes("claim") == str(winners[0]).encode()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_s3_over_tls(s3_tls_server):
    unverified = s3_tls_server.config(secure=True, verify_ssl=False)
    bucket = make_s3_bucket(s3_tls_server, secure=True, verify_ssl=False)
    Store(f"s3://{bucket}/tls", config=unverified).write_bytes("a", b"over https")
    assert Store(f"s3://{bucket}/tls", config=unverified).read_bytes("a") == b"over https"
    verified = s3_tls_server.config(secure=True, verify_ssl=True, retry=RetryConfig(attempts=5))
    started = time.perf_counter()
    with pytest.raises(StorageError, match="certificate is not trusted.*S3_VERIFY_SSL=0"):
        Store(f"s3://{bucket}/tls", config=verified).read_bytes("a")
    assert time.perf_counter() - started < 2, "an untrusted certificate is not retried"
    with pytest.raises(StorageUnavailableError):  # plain HTTP to a TLS port fails (retried: connection dropped)
        Store(f"s3://{bucket}/tls", config=s3_tls_server.config(secure=False)).read_bytes("a")


def test_s3_closed_port_fails_after_the_configured_tries_quickly():
    config = S3Config(endpoint=f"{HOST}:{free_port()}", secure=False, region="us-east-1", access_key="a",
                      secret_key="b", retry=RetryConfig(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02))
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError, match="after 3 attempts"):
        Store("s3://some-bucket/x", config=config).read_bytes("a")
    assert time.perf_counter() - started < 5


def test_gcs_closed_port_fails_after_the_configured_tries_quickly(gcs_server):
    config = gcs_server.config(endpoint=f"http://{HOST}:{free_port()}",
                               retry=RetryConfig(attempts=2, initial_backoff_s=0.01, max_backoff_s=0.02))
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError, match="after 2 attempts"):
        Store("gs://some-bucket/x", config=config).read_bytes("a")
    assert time.perf_counter() - started < 5


def test_s3_settings_from_kserve_environment(s3_server, monkeypatch, tmp_path):
    bucket = make_s3_bucket(s3_server)
    monkeypatch.setenv("S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("S3_VERIFY_SSL", "0")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    config = S3Config.from_env()
    assert (config.endpoint, config.secure, config.verify_ssl, config.region) == (
        s3_server.endpoint, False, False, "us-east-1")
    Store(f"s3://{bucket}/env").write_bytes("a", b"from env")  # config=None: read from the environment

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "AWS_ACCESS_KEY_ID").write_text(s3_server.access_key + "\n")
    (secret_dir / "AWS_SECRET_ACCESS_KEY").write_text(s3_server.secret_key)
    monkeypatch.setenv("TEXTCLF_S3_SECRET_DIR", str(secret_dir))
    assert Store(f"s3://{bucket}/env").read_bytes("a") == b"from env"


def test_s3_settings_are_validated():
    assert S3Config.from_env({"AWS_ENDPOINT_URL": "https://minio.example:9000"}).secure is True
    assert S3Config.from_env({"S3_ENDPOINT": "minio:9000"}).secure is True, "TLS is on unless S3_USE_HTTPS=0"
    assert S3Config.from_env({}).endpoint == "s3.amazonaws.com"
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        S3Config.from_env({"AWS_ENDPOINT_URL": "minio:9000"})
    with pytest.raises(ConfigError, match="both"):
        S3Config.from_env({"AWS_ACCESS_KEY_ID": "only-the-id"})
    with pytest.raises(ConfigError, match="not a directory"):
        S3Config.from_env({"TEXTCLF_S3_SECRET_DIR": "/no/such/dir"})
    with pytest.raises(ConfigError, match="part_size"):
        S3Config(part_size=1 << 20)
    with pytest.raises(ConfigError, match="256 KiB"):
        GcsConfig(chunk_size=100_000)


def test_gcs_settings_from_emulator_environment(gcs_server, monkeypatch):
    bucket_store = gcs_store(gcs_server)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "textclf-test")
    from_env = Store(bucket_store.uri("env"))  # config=None: emulator and anonymous credentials from the env
    from_env.write_bytes("a", b"from env")
    assert bucket_store.read_bytes("env/a") == b"from env"


@pytest.mark.parametrize(
    ("text", "scheme", "bucket", "path"),
    [
        ("s3://bucket-1/a/b.txt", Scheme.S3, "bucket-1", "a/b.txt"),
        ("gs://bucket_2/", Scheme.GS, "bucket_2", ""),
        ("file:///tmp/x/y", Scheme.FILE, "", "/tmp/x/y"),
        ("/tmp/x/./y", Scheme.FILE, "", "/tmp/x/y"),
    ],
)
def test_uri_parsing(text, scheme, bucket, path):
    uri = StorageUri.parse(text)
    assert (uri.scheme, uri.bucket, uri.path) == (scheme, bucket, path)
    assert StorageUri.parse(str(uri)) == uri


@pytest.mark.parametrize("bad", ["ftp://host/x", "s3://UPPER/x", "s3://ab/x", "s3://bucket/a/../../b",
                                 "file://remote-host/x"])
def test_bad_uris_are_refused(bad):
    with pytest.raises(StoragePathError):
        StorageUri.parse(bad)
