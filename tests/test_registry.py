"""The model registry on the local filesystem and on moto's S3 server, with small fake artifact directories in
the shapes the train, export and evaluate stages write."""

import argparse
import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from storage_servers import s3_server, s3_store  # noqa: F401  (pytest fixture)

from textclf.errors import ArtifactIntegrityError, ConfigError, RegistryError
from textclf.provenance import sha256_file
from textclf.registry import ARCHIVED, CANDIDATE, PRODUCTION, ArtifactDirs, ModelRegistry, Version, next_version
from textclf.storage import Store

TEST_SET = "a" * 64
OTHER_TEST_SET = "b" * 64
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")


def make_run(root: Path, run_key: str = "run-a", test_set: str = TEST_SET, accuracy: float = 0.90,
             export_run_key: str | None = None) -> ArtifactDirs:
    """Fake train/export/evaluate outputs with the metadata JSON the real stages write."""
    data = {
        "dataset_uri": "/data/ag_news", "dataset_format": "ag_news",
        "rows": {"train": 5700, "validation": 300, "test": 7600},
        "fingerprints": {"test_set_sha256": test_set, "train_set_sha256": "c" * 64, "test_file_sha256": "d" * 64},
    }
    params = {"method": "full", "epochs": 1.0, "batch_size": 32, "learning_rate": 0.0, "seed": 42}
    training = {"run_key": run_key, "global_steps": 180, "validation_accuracy": accuracy}
    model, onnx_model, evaluation = root / "model", root / "onnx_model", root / "evaluation"
    (model / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (model / "model.safetensors").write_bytes(os.urandom(2048))
    write_json(model / "labels.json", {"labels": LABELS})
    write_json(model / "textclf_metadata.json", {
        "labels": LABELS, "base_model": "all-MiniLM-L6-v2", "params": params, "max_length": 128,
        "normalisation_version": 1, "data": data, "training": training, "git_commit": "abc123", "created_unix": 1.0,
    })
    (onnx_model / "model.onnx").parent.mkdir(parents=True, exist_ok=True)
    (onnx_model / "model.onnx").write_bytes(os.urandom(4096))
    (onnx_model / "model.int8.onnx").write_bytes(os.urandom(1024))
    write_json(onnx_model / "labels.json", {"labels": LABELS})
    write_json(onnx_model / "export_metadata.json", {
        "spec": {"inputs": ["input_ids", "attention_mask"], "outputs": ["logits"], "opset": 18},
        "parity": {"fp32_max_abs_logit_diff": 1e-5, "int8_argmax_agreement": 0.996, "passed": True},
        "sizes_bytes": {"model.onnx": 4096, "model.int8.onnx": 1024},
        "source_model": {"base_model": "all-MiniLM-L6-v2", "params": params, "data": data,
                         "training": {**training, "run_key": export_run_key or run_key}, "git_commit": "abc123"},
    })
    per_class = {label: {"precision": accuracy, "recall": accuracy, "f1": accuracy - 0.01, "support": 1900}
                 for label in LABELS}
    write_json(evaluation / "metrics.json", {
        "test": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "expected_calibration_error": 0.02,
                 "per_class": per_class,
                 "confusion_matrix": [[1900 if i == j else 0 for j in range(4)] for i in range(4)],
                 "rows": 7600},
        "train_accuracy": accuracy + 0.02, "validation_accuracy": accuracy, "train_validation_gap": 0.02,
        "labels": LABELS, "test_set_sha256": test_set, "model_run_key": run_key,
    })
    import pandas as pd

    pd.DataFrame({"row": [1, 2, 3], "label": LABELS[:3], "predicted": LABELS[:3], "correct": [True, True, False],
                  **{f"p_{label}": [0.7, 0.1, 0.1] for label in LABELS}}).to_parquet(evaluation / "predictions.parquet")
    return ArtifactDirs(model=model, onnx_model=onnx_model, evaluation=evaluation)


@pytest.fixture(params=["file", "s3"])
def registry_store(request, tmp_path) -> Store:
    """An empty registry root on the local filesystem or in a fresh moto bucket."""
    if request.param == "file":
        return Store(tmp_path / "registry")
    return s3_store(request.getfixturevalue("s3_server"), prefix="registry")


@pytest.fixture
def registry(registry_store) -> ModelRegistry:
    return ModelRegistry(registry_store.root, store=registry_store)


@pytest.fixture
def run_a(tmp_path) -> ArtifactDirs:
    return make_run(tmp_path / "run-a", run_key="run-a", accuracy=0.90)


@pytest.fixture
def run_b(tmp_path) -> ArtifactDirs:
    return make_run(tmp_path / "run-b", run_key="run-b", accuracy=0.92)


def index_bytes(registry: ModelRegistry) -> bytes | None:
    return registry.store.read_bytes("index.json") if registry.store.exists("index.json") else None


def test_register_records_metadata_and_hashes(registry, run_a):
    version = registry.register(run_a, notes="first model")
    assert version == "v0.1.0"
    meta = registry.show(version)["metadata"]
    assert meta["notes"] == "first model" and meta["git_commit"] == "abc123"
    assert meta["base_model"] == "all-MiniLM-L6-v2" and meta["hyperparameters"]["batch_size"] == 32
    assert meta["dataset"]["fingerprints"]["test_set_sha256"] == TEST_SET and meta["dataset"]["rows"]["test"] == 7600
    assert meta["metrics"]["accuracy"] == 0.90 and meta["metrics"]["f1_Sports"] == pytest.approx(0.89)
    assert meta["created_at"].endswith("Z")
    local_files = {f"{name}/{p.relative_to(d).as_posix()}": sha256_file(p)
                   for name, d in run_a.by_name().items() for p in d.rglob("*") if p.is_file()}
    assert meta["artifacts"] == local_files
    [row] = registry.list_versions()
    assert row["version"] == "v0.1.0" and row["status"] == CANDIDATE and row["accuracy"] == 0.90


def test_every_version_gets_a_model_card(registry, run_a, capsys, tmp_path, monkeypatch):
    version = registry.register(run_a, notes="first run")
    card = registry.card(version)
    assert card.startswith(f"# Model card: textclf {version}")
    for heading in ("Model details", "Intended use", "Out-of-scope use", "Training data", "Evaluation", "Export",
                    "Limitations", "Versions"):
        assert f"## {heading}" in card, heading
    assert "four topics (World, Sports, Business, Sci/Tech)" in card  # the ag_news intended use
    assert "| World | 0.9000 | 0.9000 | 0.8900 | 1900 |" in card and "first run" in card
    assert "test_set_sha256: `" + TEST_SET + "`" in card and "int8_argmax_agreement | 0.9960" in card
    page = registry.card(version, html=True)
    assert page.count("<img") == 2 and "<table>" in page and version in page and "@@" not in page


def test_explicit_and_next_patch_versions(registry, run_a, run_b):
    assert registry.register(run_a, version="v1.2.3") == "v1.2.3"
    assert registry.register(run_b) == "v1.2.4"
    assert [row["version"] for row in registry.list_versions()] == ["v1.2.3", "v1.2.4"]
    assert registry.artifact_uri("v1.2.4").endswith("/versions/v1.2.4/onnx_model")


def test_fetch_verifies_every_file(registry, run_a, tmp_path):
    version = registry.register(run_a)
    out = registry.fetch(version, tmp_path / "fetched")
    assert (out / "onnx_model" / "model.onnx").read_bytes() == (run_a.onnx_model / "model.onnx").read_bytes()
    only_onnx = registry.fetch(version, tmp_path / "serving", parts=("onnx_model",))
    assert sorted(p.name for p in only_onnx.iterdir()) == ["onnx_model"]

    registry.store.write_bytes(f"versions/{version}/onnx_model/model.onnx", b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="model.onnx.*corrupted"):
        registry.fetch(version, tmp_path / "corrupt")
    assert not (tmp_path / "corrupt").exists(), "a failed verification leaves nothing behind"


def test_fetch_refuses_missing_or_unexpected_files(registry, run_a, tmp_path):
    version = registry.register(run_a)
    registry.store.write_bytes(f"versions/{version}/model/extra.bin", b"x")
    with pytest.raises(ArtifactIntegrityError, match="unexpected.*extra.bin"):
        registry.fetch(version, tmp_path / "a")
    registry.store.delete(f"versions/{version}/model/extra.bin")
    registry.store.delete(f"versions/{version}/model/labels.json")
    with pytest.raises(ArtifactIntegrityError, match="missing.*labels.json"):
        registry.fetch(version, tmp_path / "b")


def test_promote_rollback_archive_lifecycle(registry, run_a, run_b, tmp_path):
    first = registry.register(run_a)
    second = registry.register(run_b)
    third = registry.register(make_run(tmp_path / "run-c", run_key="run-c"))
    assert registry.promote(first) == {"production": first, "previous": None}
    assert registry.promote(second) == {"production": second, "previous": first}
    statuses = {row["version"]: row["status"] for row in registry.list_versions()}
    assert statuses == {first: CANDIDATE, second: PRODUCTION, third: CANDIDATE}

    assert registry.rollback() == {"production": first, "rolled_back": second}
    statuses = {row["version"]: row["status"] for row in registry.list_versions()}
    assert statuses == {first: PRODUCTION, second: ARCHIVED, third: CANDIDATE}
    assert registry.archive(third) == {"archived": third}
    assert registry.production_version() == first
    assert [event["action"] for event in registry.index()["history"]] == ["promote", "promote", "rollback", "archive"]


def test_promote_and_archive_record_their_reason(registry, run_a, run_b):
    first, second = registry.register(run_a), registry.register(run_b)
    registry.promote(first, reason="gate: no production model")
    registry.archive(second, reason="gate: +0.1 points < +0.5 required")
    history = registry.index()["history"]
    assert [(event["action"], event["reason"]) for event in history] == [
        ("promote", "gate: no production model"), ("archive", "gate: +0.1 points < +0.5 required")]
    assert registry.show(second)["archived_reason"] == "gate: +0.1 points < +0.5 required"


def test_rollback_skips_versions_archived_since(registry, run_a, run_b, tmp_path):
    first, second = registry.register(run_a), registry.register(run_b)
    third = registry.register(make_run(tmp_path / "run-c", run_key="run-c"))
    for version in (first, second, third):
        registry.promote(version)
    registry.archive(second)
    assert registry.rollback() == {"production": first, "rolled_back": third}


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda r, dirs: r.register(dirs, version="1.0.0"), "not of the form"),
        (lambda r, dirs: r.register(dirs, version="v1.0"), "not of the form"),
        (lambda r, dirs: r.register(dirs, version="v01.0.0"), "not of the form"),
        (lambda r, dirs: r.register(dirs, version="v0.1.0"), "already exists"),
        (lambda r, dirs: r.promote("v9.9.9"), "not in the registry"),
        (lambda r, dirs: r.promote("latest"), "not of the form"),
        (lambda r, dirs: r.promote("v0.1.1"), "archived"),
        (lambda r, dirs: r.promote("v0.1.0"), "already in production"),
        (lambda r, dirs: r.archive("v0.1.0"), "in production"),
        (lambda r, dirs: r.archive("v0.1.1"), "already archived"),
        (lambda r, dirs: r.rollback(), "no earlier production version"),
        (lambda r, dirs: r.show("v3.0.0"), "not in the registry"),
        (lambda r, dirs: r.fetch("v0.1.0", dirs.model.parent / "out", parts=("weights",)), "no artifact folder"),
    ],
)
def test_refused_requests_change_nothing(registry, run_a, run_b, operation, message):
    registry.register(run_a)  # v0.1.0, promoted below
    registry.register(run_b)  # v0.1.1, archived below
    registry.promote("v0.1.0")
    registry.archive("v0.1.1")
    before, listing = index_bytes(registry), registry.store.list()
    with pytest.raises(RegistryError, match=message):
        operation(registry, run_a)
    assert index_bytes(registry) == before, "the index must be byte-identical after a refused request"
    assert registry.store.list() == listing


def test_rollback_with_nothing_in_production(registry, run_a):
    registry.register(run_a)
    before = index_bytes(registry)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert index_bytes(registry) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_set": OTHER_TEST_SET}, "another test set"),
        ({"export_run_key": "run-z"}, "another training run"),
    ],
)
def test_register_refuses_artifacts_of_different_runs(registry, run_a, tmp_path, kwargs, message):
    registry.register(run_a)
    mixed = make_run(tmp_path / "mixed", run_key="run-m", **kwargs)
    if "test_set" in kwargs:  # the evaluation scored another test set than the model's
        mixed = ArtifactDirs(model=run_a.model, onnx_model=run_a.onnx_model, evaluation=mixed.evaluation)
    before, listing = index_bytes(registry), registry.store.list()
    with pytest.raises(RegistryError, match=message):
        registry.register(mixed)
    assert index_bytes(registry) == before and registry.store.list() == listing


def test_register_refuses_a_missing_metadata_file(registry, run_a):
    (run_a.evaluation / "metrics.json").unlink()
    with pytest.raises(RegistryError, match="metrics.json: not found"):
        registry.register(run_a)
    assert index_bytes(registry) is None and registry.store.list() == []


def test_compare_side_by_side_and_refuses_other_test_sets(registry, run_a, run_b, tmp_path):
    first, second = registry.register(run_a), registry.register(run_b)
    comparison = registry.compare(first, second)
    assert comparison["metrics"]["accuracy"][first] == 0.90 and comparison["metrics"]["accuracy"][second] == 0.92
    assert comparison["metrics"]["accuracy"]["delta"] == pytest.approx(0.02)
    other = registry.register(make_run(tmp_path / "other", run_key="run-o", test_set=OTHER_TEST_SET))
    with pytest.raises(RegistryError, match="different test sets"):
        registry.compare(first, other)


def test_concurrent_writers_lose_nothing(registry_store, tmp_path):
    """Six writers (each with its own registry client) register at once, then promote at once."""
    runs = [make_run(tmp_path / f"run-{i}", run_key=f"run-{i}", accuracy=0.8 + i / 100) for i in range(6)]
    registered: list[str] = []
    errors: list[BaseException] = []

    def writer(dirs: ArtifactDirs) -> None:
        try:
            own_store = Store(registry_store.root, config=registry_store.backend.config)
            registered.append(ModelRegistry(own_store.root, store=own_store).register(dirs))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(dirs,)) for dirs in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    registry = ModelRegistry(registry_store.root, store=registry_store)
    assert sorted(registered) == [f"v0.1.{i}" for i in range(6)]
    assert [row["version"] for row in registry.list_versions()] == sorted(registered, key=Version.parse)
    by_accuracy = {row["accuracy"]: row["version"] for row in registry.list_versions()}
    assert sorted(by_accuracy) == [pytest.approx(0.8 + i / 100) for i in range(6)]

    promoters = [threading.Thread(target=registry.promote, args=(version,)) for version in registered]
    for thread in promoters:
        thread.start()
    for thread in promoters:
        thread.join()
    index = registry.index()
    assert len(index["history"]) == 6, "every promotion is recorded"
    assert [row["status"] for row in registry.list_versions()].count(PRODUCTION) == 1
    assert index["production"] == index["history"][-1]["version"]


def register_in_child_process(root: str, config, dirs: ArtifactDirs, results) -> None:
    """Body of a forked writer process: its own client, one registration, the version (or error) to the queue."""
    try:
        store = Store(root, config=config)
        results.put(ModelRegistry(store.root, store=store).register(dirs))
    except BaseException as exc:  # reported by the parent
        results.put(f"error: {exc!r}")


def test_concurrent_writer_processes_lose_nothing(registry_store, tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    runs = [make_run(tmp_path / f"run-{i}", run_key=f"run-{i}") for i in range(4)]
    processes = [
        context.Process(target=register_in_child_process,
                        args=(str(registry_store.root), registry_store.backend.config, dirs, results))
        for dirs in runs
    ]
    for process in processes:
        process.start()
    versions = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert versions == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3"]
    registry = ModelRegistry(registry_store.root, store=registry_store)
    assert [row["version"] for row in registry.list_versions()] == versions


def test_versions():
    assert Version.parse("v0.10.0") > Version.parse("v0.9.9")
    assert str(next_version(["v1.0.0", "v0.9.12"])) == "v1.0.1"
    assert str(next_version([])) == "v0.1.0"


def run_cli(argv: list[str]) -> int:
    """The ``textclf`` command line, in process: exit code 0, or 2 with ``textclf: error: ...`` on stderr."""
    from textclf.cli import main

    return main(argv)


def test_cli_commands(tmp_path, run_a, run_b, capsys, monkeypatch):
    root = str(tmp_path / "cli-registry")
    dirs = ["--model-dir", str(run_a.model), "--onnx-dir", str(run_a.onnx_model),
            "--evaluation-dir", str(run_a.evaluation)]
    assert run_cli(["registry", "--registry-uri", root, "register", *dirs, "--notes", "cli"]) == 0
    assert json.loads(capsys.readouterr().out) == {"registered": "v0.1.0"}
    monkeypatch.setenv("TEXTCLF_REGISTRY_URI", root)
    ModelRegistry(root).register(run_b)
    ModelRegistry(root).register(make_run(tmp_path / "run-c", run_key="run-c"))
    for argv in (["promote", "v0.1.0"], ["promote", "v0.1.1"], ["rollback"], ["archive", "v0.1.2"]):
        assert run_cli(["registry", *argv]) == 0, argv
    capsys.readouterr()
    assert run_cli(["registry", "list"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["production"] == "v0.1.0"
    assert [row["status"] for row in listing["versions"]] == [PRODUCTION, ARCHIVED, ARCHIVED]
    assert run_cli(["registry", "show", "v0.1.0"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["notes"] == "cli"
    assert run_cli(["registry", "compare", "v0.1.0", "v0.1.1"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"]["delta"] == pytest.approx(0.02)
    assert run_cli(["registry", "card", "v0.1.0"]) == 0
    assert capsys.readouterr().out.startswith("# Model card: textclf v0.1.0")
    assert run_cli(["registry", "card", "v0.1.0", "--html"]) == 0
    assert capsys.readouterr().out.startswith("<!doctype html>")

    assert run_cli(["registry", "promote", "v0.1.1"]) == 2
    assert "archived" in capsys.readouterr().err
    monkeypatch.delenv("TEXTCLF_REGISTRY_URI")
    with pytest.raises(ConfigError, match="TEXTCLF_REGISTRY_URI"):
        from textclf.cli.registry import registry_from_args

        registry_from_args(argparse.Namespace(registry_uri=""))


def test_register_component_under_kfp_local(tmp_path, run_a, monkeypatch):
    from kfp import dsl
    from kfp.dsl import Artifact, Model

    from textclf.pipelines.local import init_local_runner
    from textclf.registry.component import register_op

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test
    registry_uri = f"file://{tmp_path / 'kfp-registry'}"

    @dsl.pipeline(name="register-test")
    def register_pipeline(registry_uri: str) -> str:
        model = dsl.importer(artifact_uri=str(run_a.model), artifact_class=Model, reimport=False)
        onnx_model = dsl.importer(artifact_uri=str(run_a.onnx_model), artifact_class=Model, reimport=False)
        evaluation = dsl.importer(artifact_uri=str(run_a.evaluation), artifact_class=Artifact, reimport=False)
        return register_op(model=model.output, onnx_model=onnx_model.output, evaluation=evaluation.output,
                           registry_uri=registry_uri, version="", notes="from kfp").outputs["Output"]

    init_local_runner(tmp_path / "pipeline_root")
    task = register_pipeline(registry_uri=registry_uri)
    assert task.output == "v0.1.0"
    shown = ModelRegistry(registry_uri).show("v0.1.0")
    assert shown["status"] == CANDIDATE and shown["metadata"]["notes"] == "from kfp"
