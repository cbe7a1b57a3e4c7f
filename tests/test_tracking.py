"""Experiment tracking: TensorBoard event files and a real MLflow tracking server (``mlflow server``, SQLite
backend, on 127.0.0.1) around a short real training run; an unreachable server is a warning, not a failure."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import requires_ag_news

from textclf.config import TrainConfig
from textclf.train import train_model
from textclf.train.tracking import TrackingConfig, log_model, mlflow_reachable, tracking_callbacks

SHORT = TrainConfig(epochs=0.25, batch_size=8, max_length=32, checkpoint_steps=5, early_stopping_patience=0, seed=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    output = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=output, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while mlflow_reachable(url, timeout_s=2) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        output.close()


@requires_ag_news
def test_a_run_is_tracked_in_tensorboard_and_mlflow(small_splits, mlflow_server, tmp_path):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrackingConfig(tensorboard_dir=tmp_path / "tensorboard", mlflow_tracking_uri=mlflow_server,
                            experiment="textclf-test", run_name="short", tags={"stage": "train"})
    callbacks = tracking_callbacks(config, SHORT.to_dict())
    assert len(callbacks) == 2
    result = train_model(small_splits, SHORT, tmp_path / "model", progress=False, callbacks=callbacks)
    run_id = log_model(callbacks, result.model_dir, {"validation_accuracy": result.summary["validation_accuracy"]})

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "eval/loss" in scalars and "eval/accuracy" in scalars

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.run_name == "short" and run.data.tags["stage"] == "train"
    assert run.data.params["batch_size"] == "8" and run.data.params["epochs"] == "0.25"
    assert "eval_loss" in run.data.metrics and "loss" in run.data.metrics
    assert run.data.metrics["validation_accuracy"] == pytest.approx(result.summary["validation_accuracy"])
    history = client.get_metric_history(run_id, "eval_loss")
    assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    artifacts = {item.path for item in client.list_artifacts(run_id, "model")}
    assert "model/model.safetensors" in artifacts and "model/textclf_metadata.json" in artifacts


def test_an_unreachable_server_is_a_warning_and_training_is_not_tracked(caplog, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="textclf.train.tracking"):
        callbacks = tracking_callbacks(TrackingConfig(), {"epochs": 1})
    assert callbacks == []
    assert "does not answer" in caplog.text and "training goes on without MLflow" in caplog.text
    assert log_model(callbacks, Path("/nonexistent")) is None


def test_no_tracking_configured_means_no_callbacks(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_callbacks(TrackingConfig(), {}) == []
    assert mlflow_reachable("sqlite:///local.db") is None
    closed = mlflow_reachable(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    assert closed is not None and "refused" in closed.lower(), "a closed port is reported with the reason"
