"""Real local object-store servers for the storage and registry tests: moto's S3 server (with IAM authentication
switched on, so wrong credentials are refused) and gcp-storage-emulator, each on a free port of 127.0.0.1.

Import the fixtures into a test module with ``from storage_servers import ...``. Each server runs once per test
session and is stopped by its PID at the end; no test sends traffic anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from textclf.ports import LOOPBACK, free_port
from textclf.storage import GcsConfig, RetryConfig, S3Config, Store

HOST = LOOPBACK
VENV_BIN = Path(sys.executable).parent
#: Small backoff so the retry tests finish in well under a second.
FAST_RETRY = RetryConfig(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, timeout_s=10.0)
S3_REGION = "us-east-1"
GCS_PROJECT = "textclf-test"


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server and the IAM credentials it accepts."""

    endpoint: str
    access_key: str
    secret_key: str

    def config(self, **changes) -> S3Config:
        """Settings for this server (plain HTTP, fast retries); ``changes`` override fields."""
        settings = dict(endpoint=self.endpoint, secure=False, region=S3_REGION, access_key=self.access_key,
                        secret_key=self.secret_key, retry=FAST_RETRY)
        settings.update(changes)
        return S3Config(**settings)


@dataclass(frozen=True)
class GcsServer:
    """A running gcp-storage-emulator."""

    endpoint: str

    def config(self, **changes) -> GcsConfig:
        """Settings for this emulator (anonymous credentials, a test project, 256 KiB chunks, fast retries)."""
        from google.auth.credentials import AnonymousCredentials

        settings = dict(project=GCS_PROJECT, endpoint=self.endpoint, credentials=AnonymousCredentials(),
                        chunk_size=256 << 10, retry=FAST_RETRY)
        settings.update(changes)
        return GcsConfig(**settings)


def wait_until_answering(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until the server answers with any HTTP status (a self-signed certificate is accepted).

    Raises:
        RuntimeError: The process exited, or no answer within ``timeout_s``.
    """
    self_signed_ok = ssl.create_default_context()
    self_signed_ok.check_hostname = False
    self_signed_ok.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=self_signed_ok):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no answer from {url} within {timeout_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate the server by its PID; kill it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def start(command: list[str], url: str, log_path: Path) -> subprocess.Popen:
    """Start a server with its output in ``log_path`` and wait until it answers on ``url``."""
    log = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    try:
        wait_until_answering(url, process)
    except BaseException:
        stop(process)
        raise
    return process


def create_iam_user_and_enforce_auth(endpoint_url: str) -> tuple[str, str]:
    """Create an IAM user allowed ``s3:*`` on the moto server, then switch authentication on.

    Returns:
        The user's access key id and secret.
    """
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint_url, region_name=S3_REGION,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="textclf-tests")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="textclf-tests", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="textclf-tests")["AccessKey"]
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """moto's S3 server on a free port with IAM authentication enforced."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    process = start([str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(port)], f"{url}/moto-api/", log_path)
    try:
        access_key, secret_key = create_iam_user_and_enforce_auth(url)
        yield S3Server(f"{HOST}:{port}", access_key, secret_key)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def s3_tls_server(tmp_path_factory) -> Iterator[S3Server]:
    """moto's S3 server over HTTPS with a self-signed certificate (authentication off: any key is accepted)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto_tls") / "moto_server.log"
    command = [str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(port), "--ssl"]
    process = start(command, f"https://{HOST}:{port}/moto-api/", log_path)
    try:
        yield S3Server(f"{HOST}:{port}", "any-key", "any-secret")
    finally:
        stop(process)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[GcsServer]:
    """gcp-storage-emulator (in memory) on a free port."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_path = tmp_path_factory.mktemp("gcs") / "gcp_storage_emulator.log"
    command = [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host", HOST, "--port", str(port), "--in-memory"]
    process = start(command, url, log_path)
    try:
        yield GcsServer(url)
    finally:
        stop(process)


def unique_bucket() -> str:
    """A fresh, valid bucket name."""
    return f"textclf-{uuid.uuid4().hex[:12]}"


def make_s3_bucket(server: S3Server, **changes) -> str:
    """Create a fresh bucket on the moto server (``changes`` override config fields); returns its name."""
    from textclf.storage.s3 import make_client

    name = unique_bucket()
    make_client(server.config(**changes)).make_bucket(name, location=S3_REGION)
    return name


def make_gcs_bucket(server: GcsServer) -> str:
    """Create a fresh bucket on the emulator; returns its name."""
    from textclf.storage.gcs import make_client

    name = unique_bucket()
    make_client(server.config()).create_bucket(name)
    return name


def s3_store(server: S3Server, prefix: str = "prefix/sub", **changes) -> Store:
    """A store under a fresh moto bucket."""
    return Store(f"s3://{make_s3_bucket(server)}/{prefix}", config=server.config(**changes))


def gcs_store(server: GcsServer, prefix: str = "prefix/sub", **changes) -> Store:
    """A store under a fresh emulator bucket."""
    return Store(f"gs://{make_gcs_bucket(server)}/{prefix}", config=server.config(**changes))
