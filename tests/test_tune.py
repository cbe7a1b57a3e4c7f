"""The tune stage: search-space validation, the pruning callback, a real tiny Optuna search, resuming a killed
search from its SQLite storage, the best-params artifact, and the Katib / Trainer manifests generated from the
same space (validated against the CRD schema; the trial command parsed by our CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from textclf.config import TrainConfig
from textclf.errors import ConfigError
from textclf.tune import (
    BEST_PARAMS_FILE,
    DEFAULT_SEARCH_SPACE,
    ParamRange,
    SearchSpace,
    TuneConfig,
    apply_best_params,
    load_best_params,
    pruning_callback,
    run_search,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- the search space --------------------------------------------------------------------------------------------


def test_default_space_covers_the_issue_parameters():
    assert set(DEFAULT_SEARCH_SPACE.names) == {"learning_rate", "epochs", "warmup_ratio", "weight_decay",
                                                "label_smoothing", "batch_size"}
    assert SearchSpace.from_dict(DEFAULT_SEARCH_SPACE.to_dict()) == DEFAULT_SEARCH_SPACE


@pytest.mark.parametrize("spec, message", [
    ({"learning_rate": {"low": 1e-4, "high": 1e-4}}, "empty range"),
    ({"epochs": {"low": 3, "high": 1}}, "empty range"),
    ({"batch_size": {"choices": []}}, "empty range"),
    ({"batch_size": {"choices": [32]}}, "empty range"),
    ({"dropout_rate": {"low": 0.1, "high": 0.2}}, "unknown search space parameter 'dropout_rate'"),
    ({"base_model": {"choices": ["a", "b"]}}, "unknown search space parameter"),
    ({"learning_rate": {"low": 0, "high": 1e-3, "log": True}}, "log-scale"),
    ({"warmup_ratio": {"low": 0.0, "high": 1.5}}, "not a valid TrainConfig.warmup_ratio"),
    ({"batch_size": {"low": 8.5, "high": 64}}, "integer bounds"),
    ({"learning_rate": {"low": 1e-5}}, "give low and high"),
    ({"learning_rate": {"low": 1e-5, "high": 1e-4, "step": 2}}, "unknown keys"),
    ({}, "empty"),
])
def test_bad_search_spaces_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(spec)


def test_bad_space_fails_before_any_training(small_splits, tmp_path):
    def must_not_train(*args):
        raise AssertionError("trained")

    with pytest.raises(ConfigError, match="empty range"):
        run_search(small_splits, tmp_path, TuneConfig(n_trials=1),
                   space=SearchSpace((ParamRange("weight_decay", "float", 0.1, 0.1),)), train_trial=must_not_train)
    assert not (tmp_path / "study.db").exists()


def test_space_suggests_typed_values():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = DEFAULT_SEARCH_SPACE.suggest(study.ask())
    assert 1e-5 <= params["learning_rate"] <= 3e-4 and params["batch_size"] in (16, 32, 64)
    config = apply_best_params(TrainConfig(base_model="x"), params)
    assert isinstance(config.batch_size, int) and config.epochs == params["epochs"]


# --- the pruning callback (a fake trainer state: no training) ----------------------------------------------------


def test_pruning_callback_reports_and_prunes():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for accuracy in (0.8, 0.9):
        trial = study.ask()
        for step in (10, 20):
            pruning_callback(trial).on_evaluate(None, SimpleNamespace(global_step=step), None,
                                                metrics={"eval_loss": 0.5, "eval_accuracy": accuracy})
        study.tell(trial, accuracy)
    good, bad = study.ask(), study.ask()
    pruning_callback(good).on_evaluate(None, SimpleNamespace(global_step=10), None,
                                       metrics={"eval_accuracy": 0.95})
    assert good.storage.get_trial(good._trial_id).intermediate_values == {10: 0.95}
    rows = pruning_callback(study.ask(), rows_per_step=32)  # the step reported is the training rows seen
    rows.on_evaluate(None, SimpleNamespace(global_step=10), None, metrics={"eval_accuracy": 0.9})
    assert list(rows.reported_steps) == [320]
    callback = pruning_callback(bad)
    callback.on_evaluate(None, SimpleNamespace(global_step=10), None, metrics={"eval_loss": 1.0})  # no accuracy
    with pytest.raises(optuna.TrialPruned, match="step 10"):
        callback.on_evaluate(None, SimpleNamespace(global_step=10), None, metrics={"eval_accuracy": 0.5})


# --- searches with a fake trainer: resume, best params ----------------------------------------------------------


class FakeTrainer:
    """Scores a configuration without training: accuracy peaks at learning rate 1e-4; reports two evaluations."""

    def __init__(self):
        self.calls: list[dict[str, Any]] = []

    def __call__(self, split_dir: Path, config: TrainConfig, output_dir: Path, callbacks: list[Any]) -> dict:
        import math

        self.calls.append({"learning_rate": config.learning_rate, "weight_decay": config.weight_decay})
        accuracy = 0.9 - abs(math.log10(config.learning_rate) + 4) / 10
        for step in (10, 20):
            for callback in callbacks:
                callback.on_evaluate(None, SimpleNamespace(global_step=step), None,
                                     metrics={"eval_accuracy": accuracy * step / 20, "eval_loss": 1 - accuracy})
        return {"validation_accuracy": accuracy, "validation_loss": 1 - accuracy, "global_steps": 20}


SMALL_SPACE = SearchSpace((ParamRange("learning_rate", "float", 1e-5, 1e-3, log=True),
                           ParamRange("weight_decay", "float", 0.0, 0.1)))


def test_search_resumes_from_its_storage_without_repeating_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # All random startup trials (no pruning either): a restarted sampler would draw the same parameters again.
    config = TuneConfig(n_trials=3, storage=storage, study_name="resume", startup_trials=10)
    fake = FakeTrainer()
    first = run_search(tmp_path, tmp_path / "out", config, TrainConfig(base_model="x"), SMALL_SPACE, fake)
    assert len(fake.calls) == 3 and first.best["trials"]["COMPLETE"] + first.best["trials"]["PRUNED"] == 3
    # Trial 0 is the base configuration (the defaults the search has to beat).
    assert fake.calls[0] == {"learning_rate": 1e-4, "weight_decay": 0.01}
    assert first.best["defaults_trial"]["trial_number"] == 0

    # A search killed mid-trial leaves a RUNNING trial behind: it is retried with the same parameters.
    study = optuna.load_study(study_name="resume", storage=storage)
    killed = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
                        "weight_decay": optuna.distributions.FloatDistribution(0.0, 0.1)})
    again = FakeTrainer()
    result = run_search(tmp_path, tmp_path / "out", TuneConfig(n_trials=5, storage=storage, study_name="resume",
                        startup_trials=10), TrainConfig(base_model="x"), SMALL_SPACE, again)
    assert len(again.calls) == 2  # 3 done before, 5 wanted: the retried trial and one new one
    assert again.calls[0] == {"learning_rate": killed.params["learning_rate"],
                              "weight_decay": killed.params["weight_decay"]}
    assert again.calls[1] not in fake.calls  # a new process does not redraw the first one's parameters
    states = [t["state"] for t in result.trials]
    assert states.count("FAIL") == 1 and states.count("RUNNING") == 0
    # Nothing left to do: a third run trains nothing and reports the same best trial.
    idle = FakeTrainer()
    last = run_search(tmp_path, tmp_path / "out", TuneConfig(n_trials=5, storage=storage, study_name="resume"),
                      TrainConfig(base_model="x"), SMALL_SPACE, idle)
    assert idle.calls == [] and last.best["trial_number"] == result.best["trial_number"]


def test_best_params_artifact_applies_to_train_config(tmp_path):
    result = run_search(tmp_path, tmp_path, TuneConfig(n_trials=4, startup_trials=2),
                        TrainConfig(base_model="x"), SMALL_SPACE, FakeTrainer())
    saved = json.loads((tmp_path / BEST_PARAMS_FILE).read_text())
    assert saved["params"] == result.best["params"] and set(saved["params"]) == {"learning_rate", "weight_decay"}
    assert saved["study_name"] == "textclf-tune" and saved["storage"].startswith("sqlite:///")
    assert {"validation_accuracy", "validation_loss"} <= set(saved)
    assert (tmp_path / "study.db").is_file() and (tmp_path / "trials.json").is_file()
    base = TrainConfig(base_model="x", epochs=2.0, seed=7)
    for source in (tmp_path, tmp_path / BEST_PARAMS_FILE, saved, saved["params"]):
        tuned = apply_best_params(base, source)
        assert tuned.learning_rate == saved["params"]["learning_rate"] and tuned.epochs == 2.0 and tuned.seed == 7
    with pytest.raises(ConfigError, match="unknown hyper-parameters"):
        apply_best_params(base, {"dropout": 0.1})
    with pytest.raises(ConfigError, match="no hyper-parameters file"):
        load_best_params(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="valid TrainConfig"):
        apply_best_params(base, {"warmup_ratio": 2.0})


def test_tune_config_is_checked():
    with pytest.raises(ConfigError, match="n_trials"):
        TuneConfig(n_trials=0)
    with pytest.raises(ConfigError, match="RDB URL"):
        TuneConfig(storage="study.db")


# --- a real search on a tiny slice (MiniLM, fractions of an epoch) -----------------------------------------------


@pytest.fixture
def tiny_splits(small_splits, tmp_path):
    """``small_splits`` cut to 48 train and 32 validation rows (the same labels, report and test split)."""
    import shutil

    import pandas as pd

    out = tmp_path / "tiny_splits"
    shutil.copytree(small_splits, out)
    for name, rows in (("train", 48), ("validation", 32)):
        frame = pd.read_parquet(out / f"{name}.parquet")
        frame.sample(n=rows, random_state=0).to_parquet(out / f"{name}.parquet", index=False)
    return out


def test_real_tiny_search_trains_and_writes_best_params(tiny_splits, tmp_path):
    """Two real trials (MiniLM, 3 steps of 16 rows each, a validation evaluation after step 2 and at the end)."""
    space = SearchSpace((ParamRange("learning_rate", "float", 5e-5, 5e-4, log=True),
                         ParamRange("warmup_ratio", "float", 0.0, 0.2)))
    base = TrainConfig(max_length=32, batch_size=16, checkpoint_steps=2, early_stopping_patience=0, num_threads=2)
    result = run_search(tiny_splits, tmp_path / "out", TuneConfig(n_trials=2, startup_trials=1), base, space)
    assert result.best["trials"]["COMPLETE"] + result.best["trials"]["PRUNED"] == 2
    assert result.best["trials"]["COMPLETE"] >= 1  # the first trial (the defaults) is never pruned
    assert 0.0 <= result.best["validation_accuracy"] <= 1.0 and result.best["validation_loss"] > 0
    # The validation evaluation after step 2 reached the trial, reported at the rows seen (2 steps of 16).
    assert all("32" in t["intermediate"] for t in result.trials)
    assert result.best["defaults_trial"]["params"] == {"learning_rate": 1e-4, "warmup_ratio": 0.06}
    assert apply_best_params(base, tmp_path / "out").learning_rate == result.best["params"]["learning_rate"]


# --- the cluster search: Katib Experiment and Trainer OptimizationJob --------------------------------------------

TRAINER_CRD = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "kubeflow-trainer" / \
    "trainer.kubeflow.org_optimizationjobs.yaml"
requires_trainer_crd = pytest.mark.skipif(not TRAINER_CRD.is_file(), reason=f"{TRAINER_CRD} not found")


def _cluster_search():
    from textclf.tune.katib import ClusterSearch

    return ClusterSearch(name="agnews-tune", splits_uri="s3://textclf/splits/agnews", parallel_trials=2)


def _parse_trial_command(command: list[str], placeholder_values: dict[str, str]) -> Any:
    """The trial's command, placeholders filled in as Katib would, parsed by our real CLI parser."""
    from textclf.cli import build_parser

    assert command[0] == "textclf"
    argv = []
    for arg in command[1:]:
        for name, value in placeholder_values.items():
            arg = arg.replace("${trialParameters." + name + "}", value)
        assert "${" not in arg, f"unfilled placeholder in {arg}"
        argv.append(arg)
    return build_parser(with_pipeline_flags=False).parse_args(argv)


def test_katib_experiment_mirrors_the_local_search():
    from textclf.tune.katib import METRICS_FORMAT, katib_experiment
    from textclf.tune.tune import OBJECTIVE_DIRECTION, OBJECTIVE_METRIC

    base = TrainConfig(max_length=64, checkpoint_steps=50)
    experiment = katib_experiment(_cluster_search(), DEFAULT_SEARCH_SPACE, TuneConfig(n_trials=12), base)
    assert (experiment["apiVersion"], experiment["kind"]) == ("kubeflow.org/v1beta1", "Experiment")
    spec = experiment["spec"]
    assert spec["objective"]["objectiveMetricName"] == OBJECTIVE_METRIC
    assert spec["objective"]["type"] == OBJECTIVE_DIRECTION
    assert spec["algorithm"]["algorithmName"] == "tpe" and spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert spec["maxTrialCount"] == 12 and spec["parallelTrialCount"] == 2
    params = {p["name"]: p for p in spec["parameters"]}
    assert set(params) == set(DEFAULT_SEARCH_SPACE.names)
    assert params["learning_rate"] == {"name": "learning_rate", "parameterType": "double", "feasibleSpace": {
        "min": "1e-05", "max": "0.0003", "distribution": "logUniform"}}
    assert params["batch_size"]["feasibleSpace"] == {"list": ["16", "32", "64"]}
    for p in spec["parameters"]:
        if p["parameterType"] != "categorical":
            assert float(p["feasibleSpace"]["min"]) < float(p["feasibleSpace"]["max"])
    template = spec["trialTemplate"]
    references = {t["reference"] for t in template["trialParameters"]}
    assert references == set(params)  # every trial parameter is a search parameter and the reverse
    job = template["trialSpec"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == template["primaryContainerName"]
    from textclf.images import COMPONENT_IMAGE

    assert container["image"] == COMPONENT_IMAGE
    used = {t["name"] for t in template["trialParameters"] if f"${{trialParameters.{t['name']}}}" in
            container["command"]}
    assert used == references
    assert spec["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"] == [METRICS_FORMAT]

    # The trial's command is a valid `textclf train-trial` invocation, every value mapped to its TrainConfig field.
    args = _parse_trial_command(container["command"], {"learning_rate": "5e-05", "epochs": "2.5",
                                                       "warmup_ratio": "0.1", "weight_decay": "0.05",
                                                       "label_smoothing": "0.1", "batch_size": "64"})
    assert args.command == "train-trial" and args.splits_dir == "s3://textclf/splits/agnews"
    from textclf.cli.tune import train_config_from_args

    config = train_config_from_args(args)
    assert (config.learning_rate, config.epochs, config.batch_size, config.label_smoothing) == (5e-5, 2.5, 64, 0.1)
    assert (config.max_length, config.checkpoint_steps) == (64, 50)  # the base configuration travels along


def test_katib_trial_job_is_a_valid_kubernetes_job():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from textclf.tune.katib import katib_experiment

    job = katib_experiment(_cluster_search(), DEFAULT_SEARCH_SPACE)["spec"]["trialTemplate"]["trialSpec"]
    job = {**job, "metadata": {"name": "trial"}}
    from test_manifests import K8S_VERSION

    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_trial_prints_the_metrics_katib_collects():
    import io
    import re

    from textclf.cli.tune import print_metrics
    from textclf.tune.katib import METRICS_FORMAT

    out = io.StringIO()
    print_metrics({"validation_accuracy": 0.8765, "validation_loss": 3.2e-1, "train_loss": 9.0}, out)
    found = {m.group(1): float(m.group(2)) for m in re.finditer(METRICS_FORMAT, out.getvalue())}
    assert found == {"validation_accuracy": 0.8765, "validation_loss": 0.32}


@requires_trainer_crd
def test_optimization_job_matches_the_trainer_crd():
    import jsonschema
    import yaml
    from test_manifests import _strict
    from textclf.tune.katib import optimization_job

    crd = yaml.safe_load(TRAINER_CRD.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1" and v["served"]]
    validator = jsonschema.Draft4Validator(_strict(version["schema"]["openAPIV3Schema"]))
    job = optimization_job(_cluster_search(), DEFAULT_SEARCH_SPACE, TuneConfig(n_trials=12))
    assert [e.message for e in validator.iter_errors(job)] == []
    spec = job["spec"]
    assert spec["objectives"] == [{"metric": "validation_accuracy", "direction": "Maximize"}]
    # The CRD's CEL rules, which jsonschema does not check: exactly one kind of space, min < max, log min > 0.
    for p in spec["parameters"]:
        (kind, body), = p["searchSpace"].items()
        if kind != "categorical":
            assert float(body["min"]) < float(body["max"])
            assert kind != "logUniform" or float(body["min"]) > 0
    args = _parse_trial_command(spec["trainJobTemplate"]["spec"]["trainer"]["command"], {
        "learning_rate": "1e-4", "epochs": "1", "warmup_ratio": "0", "weight_decay": "0", "label_smoothing": "0",
        "batch_size": "16"})
    assert args.command == "train-trial"
    # A broken object is caught by the same validator.
    broken = {**job, "spec": {**spec, "objectives": [{"metric": "x", "direction": "Up"}]}}
    assert any("Up" in e.message for e in validator.iter_errors(broken))


def test_cluster_search_is_checked():
    from textclf.tune.katib import ClusterSearch, optimization_job

    with pytest.raises(ConfigError, match="DNS label"):
        ClusterSearch(name="Bad_Name", splits_uri="s3://x")
    with pytest.raises(ConfigError, match="splits_uri"):
        ClusterSearch()
    with pytest.raises(ConfigError, match="at most 100"):
        optimization_job(_cluster_search(), DEFAULT_SEARCH_SPACE, TuneConfig(n_trials=101))


def test_tune_command_refuses_a_bad_space_before_training(tmp_path, capsys):
    from textclf.cli import main

    assert main(["tune", "--splits-dir", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--search-space", '{"learning_rate": {"low": 1e-3, "high": 1e-4}}']) == 2
    assert "empty range" in capsys.readouterr().err
    assert main(["tune", "--splits-dir", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--search-space", '{"gradient_clip": {"low": 0.1, "high": 1}}']) == 2
    assert "unknown search space parameter 'gradient_clip'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tune_manifest_command_writes_yaml(tmp_path):
    import yaml
    from textclf.cli import main

    out = tmp_path / "experiment.yaml"
    assert main(["tune-manifest", "--splits-uri", "s3://b/splits", "--trials", "6", "--output", str(out),
                 "--max-length", "64"]) == 0
    experiment = yaml.safe_load(out.read_text())
    assert experiment["spec"]["maxTrialCount"] == 6
    assert "--max-length" in experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
        "containers"][0]["command"]


# --- the CLI's trial command, the KFP component, the benchmark's settings (no training) --------------------------


def test_train_trial_applies_best_params_and_prints_the_objective(tmp_path, monkeypatch, capsys):
    import textclf.train
    from textclf.cli import main
    from textclf.train import TrainResult

    seen = {}

    def fake_train_model(split_dir, config, output_dir, checkpoint_root=None, progress=True, callbacks=()):
        seen.update(split_dir=split_dir, config=config, checkpoint_root=checkpoint_root)
        return TrainResult(Path(output_dir), {"validation_accuracy": 0.91, "validation_loss": 0.27})

    monkeypatch.setattr(textclf.train, "train_model", fake_train_model)
    (tmp_path / BEST_PARAMS_FILE).write_text(json.dumps({"params": {"learning_rate": 3e-5, "batch_size": 16}}))
    assert main(["train-trial", "--splits-dir", str(tmp_path), "--epochs", "2", "--learning-rate", "1e-3",
                 "--hyperparameters", str(tmp_path / BEST_PARAMS_FILE)]) == 0
    assert seen["config"].learning_rate == 3e-5 and seen["config"].batch_size == 16 and seen["config"].epochs == 2
    assert capsys.readouterr().out.splitlines() == ["validation_accuracy=0.91", "validation_loss=0.27"]
    assert main(["train-trial", "--splits-dir", str(tmp_path), "--warmup-ratio", "1.5"]) == 2  # TrainConfig refuses


def test_tune_component_passes_its_inputs_to_the_search(tmp_path, monkeypatch):
    import textclf.tune
    from textclf.tune import TuneResult
    from textclf.tune.component import tune_op

    calls = {}

    def fake_run_search(split_dir, output_dir, config, base_config, space):
        calls.update(split_dir=split_dir, config=config, base=base_config, space=space)
        return TuneResult(Path(output_dir), {"params": {"learning_rate": 2e-5}, "validation_accuracy": 0.9,
                                             "trial_number": 3})

    monkeypatch.setattr(textclf.tune, "run_search", fake_run_search)
    artifact = SimpleNamespace(path=str(tmp_path / "best"), metadata={})
    returned = tune_op.python_func(
        splits=SimpleNamespace(path=str(tmp_path)), best_params=artifact, n_trials=5, study_name="s",
        storage="sqlite:///x.db", search_space='{"weight_decay": {"low": 0, "high": 0.1}}', base_model="",
        method="lora", max_length=64, checkpoint_steps=20, seed=3, tune_seed=9)
    assert json.loads(returned) == {"learning_rate": 2e-5}
    assert calls["config"] == TuneConfig(n_trials=5, study_name="s", storage="sqlite:///x.db", seed=9)
    assert (calls["base"].method, calls["base"].max_length, calls["base"].seed) == ("lora", 64, 3)
    assert calls["space"].names == ("weight_decay",) and artifact.metadata["trial_number"] == 3
    inputs = set(tune_op.component_spec.inputs)
    assert inputs >= {"splits", "n_trials", "storage", "search_space"}
    for name in inputs:  # the docstring is the contract: every input is described
        assert f"{name}:" in tune_op.python_func.__doc__


def test_bench_settings_are_checked_and_recorded():
    from textclf.benchmarks.tune_bench import TuneBenchSettings

    settings = TuneBenchSettings(dataset_uri="/data")
    assert (settings.n_trials, settings.max_train_rows, settings.max_test_rows) == (12, 6000, 0)
    assert settings.key() == TuneBenchSettings(dataset_uri="/data", n_trials=20).key()  # more trials: same study
    assert settings.key() != TuneBenchSettings(dataset_uri="/data", max_train_rows=300).key()
    with pytest.raises(ConfigError, match="unknown search space parameter"):
        TuneBenchSettings(dataset_uri="/data", search_space='{"momentum": {"low": 0.1, "high": 0.9}}')
    with pytest.raises(ConfigError, match="n_trials"):
        TuneBenchSettings(dataset_uri="/data", n_trials=0)
    bf16 = TuneBenchSettings(dataset_uri="/data", precision="bf16")  # every trial and both retrained models
    assert bf16.base_config.precision == "bf16" and settings.base_config.precision == TrainConfig().precision
    assert bf16.key() != settings.key()
    with pytest.raises(ConfigError, match="precision"):
        TuneBenchSettings(dataset_uri="/data", precision="fp8")
    warm = TuneBenchSettings(dataset_uri="/data", pruner_warmup_evaluations=7, startup_trials=2)
    assert warm.key() != settings.key()
    assert (warm.tune_config().pruner_warmup_evaluations, warm.tune_config().startup_trials) == (7, 2)
    assert (settings.tune_config().pruner_warmup_evaluations, settings.tune_config().startup_trials) == (
        TuneConfig().pruner_warmup_evaluations, TuneConfig().startup_trials)
    with pytest.raises(ConfigError, match="pruner_warmup_evaluations"):
        TuneBenchSettings(dataset_uri="/data", pruner_warmup_evaluations=-1)


def test_bench_does_not_retrain_when_the_defaults_win():
    from textclf.benchmarks.tune_bench import _same_training
    from textclf.tune import apply_overrides

    base = TrainConfig(base_model="x", checkpoint_steps=50)
    defaults_trial = {"learning_rate": 1e-4, "epochs": 1.0, "batch_size": 32, "label_smoothing": 0.0}
    assert _same_training(apply_overrides(base, defaults_trial), base)  # lr 1e-4 is full's default (0)
    assert not _same_training(apply_overrides(base, {"learning_rate": 2e-4}), base)


def test_tune_command_runs_a_search_and_resumes_it(tmp_path, monkeypatch, capsys):
    import textclf.tune
    from textclf.cli import main

    fake = FakeTrainer()
    real_run_search = textclf.tune.run_search
    configs = []
    monkeypatch.setattr(textclf.tune, "run_search",
                        lambda *args, **kwargs: configs.append(args[2]) or real_run_search(*args, **kwargs,
                                                                                           train_trial=fake))
    argv = ["tune", "--splits-dir", str(tmp_path), "--output", str(tmp_path / "out"), "--trials", "2",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study-name", "cli", "--max-length", "64",
            "--search-space", '{"learning_rate": {"low": 1e-5, "high": 1e-3, "log": true}}',
            "--startup-trials", "1", "--pruner-warmup-evaluations", "3"]
    assert main(argv) == 0
    assert (configs[0].startup_trials, configs[0].pruner_warmup_evaluations) == (1, 3)
    printed = json.loads(capsys.readouterr().out)
    assert printed["trials"]["COMPLETE"] == 2 and printed["study_name"] == "cli"
    assert json.loads((tmp_path / "out" / BEST_PARAMS_FILE).read_text())["base_config"]["max_length"] == 64
    assert main([*argv, "--trials", "3"]) == 0 and len(fake.calls) == 3  # the same study: one more trial only
