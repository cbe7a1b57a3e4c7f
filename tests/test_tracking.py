"""Experiment tracking: TensorBoard event files and a real MLflow tracking server (``mlflow server``, SQLite
backend, on 127.0.0.1) around a short real training run; an unreachable server is a warning, not a failure."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import requires_ag_news

from textclf.config import TrainConfig
from textclf.ports import free_port
from textclf.train import train_model
from textclf.train.tracking import TrackingConfig, log_model, mlflow_reachable, tracking_callbacks

SHORT = TrainConfig(epochs=0.25, batch_size=8, max_length=32, checkpoint_steps=5, early_stopping_patience=0, seed=3)


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


def test_an_optuna_search_is_one_mlflow_run_with_a_child_run_per_trial(mlflow_server, monkeypatch, tmp_path):
    """A search of two trials, each driving its callbacks as the Trainer does (train begin, two logs and two
    validation evaluations; a real training run with the MLflow callback is the test above); the second trial
    scores below the first at the same step and the median pruner prunes it."""
    import mlflow
    from textclf.tune import SearchSpace, TuneConfig, run_search
    from textclf.tune.space import ParamRange

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    calls = []

    def trainer(split_dir, config, output_dir, callbacks):
        from types import SimpleNamespace

        state = SimpleNamespace(is_world_process_zero=True, global_step=0)
        for callback in callbacks:
            if hasattr(callback, "on_train_begin"):
                callback.on_train_begin(None, state, None)
        calls.append(config.learning_rate)
        for step in (1, 2):
            state.global_step = step
            for callback in callbacks:
                if hasattr(callback, "on_log"):
                    callback.on_log(None, state, None, logs={"loss": 1.0 / step, "eval_loss": 0.5 / step})
                callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.5 + step / 10 - len(calls) / 5,
                                                                  "eval_loss": 0.5})
        return {"validation_accuracy": 0.7, "validation_loss": 0.5, "global_steps": 2}

    space = SearchSpace((ParamRange("learning_rate", "float", 1e-5, 1e-3, log=True),))
    config = TuneConfig(n_trials=2, study_name="tracked", startup_trials=1, pruner_warmup_evaluations=0,
                        storage=f"sqlite:///{tmp_path / 'study.db'}")
    result = run_search(tmp_path, tmp_path / "out", config, TrainConfig(), space, train_trial=trainer)
    assert result.best["trials"]["COMPLETE"] == 1 and result.best["trials"]["PRUNED"] == 1

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("textclf")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.optuna_study = 'tracked'")
    parents = [r for r in runs if "optuna_trial" not in r.data.tags]
    children = sorted((r for r in runs if "optuna_trial" in r.data.tags), key=lambda r: r.data.tags["optuna_trial"])
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tracked"
    assert parent.data.metrics["best_validation_accuracy"] == 0.7 and parent.data.metrics["trials_pruned"] == 1
    assert float(parent.data.tags["best_learning_rate"]) == pytest.approx(result.best["params"]["learning_rate"])
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert [c.data.tags["optuna_state"] for c in children] == ["COMPLETE", "PRUNED"]
    assert [c.info.status for c in children] == ["FINISHED", "KILLED"]
    assert children[0].data.metrics["validation_accuracy"] == 0.7
    assert float(children[0].data.params["learning_rate"]) == pytest.approx(calls[0])
    assert len(client.get_metric_history(children[0].info.run_id, "loss")) == 2

    # A resumed search (two more trials) finds its study's run again instead of making a second one.
    run_search(tmp_path, tmp_path / "out", dataclasses.replace(config, n_trials=4), TrainConfig(), space,
               train_trial=trainer)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.optuna_study = 'tracked'")
    assert len([r for r in runs if "optuna_trial" not in r.data.tags]) == 1
    resumed = [r for r in runs if "optuna_trial" in r.data.tags]
    assert len(resumed) == 4
    # Every trial, the resumed ones too, hangs under the study's run (not under the newest trial's run).
    assert {r.data.tags["mlflow.parentRunId"] for r in resumed} == {parent.info.run_id}
    assert {r.data.tags["optuna_role"] for r in resumed} == {"trial"}
