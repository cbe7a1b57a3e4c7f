"""Deployment to KServe, offline: rendered InferenceServices are validated against KServe's real CRD schema (helpers of
test_manifests) and point at a real registry's production version on moto's S3 server (tests/deploy_fakes.py)."""

import json
import os
from typing import Any

import pytest
import yaml
from deploy_fakes import aws, aws_env, bucket, registry  # noqa: F401  (pytest fixtures)
from deploy_fakes import run_cli
from test_manifests import MANIFESTS, crd_errors, requires_crds
from test_manifests import render as render_overlay
from test_registry import make_run

from textclf.deploy.kserve import (
    MODEL_VERSION_ANNOTATION,
    render_inference_service,
    render_production_inference_service,
    write_manifest,
)
from textclf.errors import ConfigError, RegistryError
from textclf.registry import ModelRegistry
from textclf.storage import Store

# --- KServe -----------------------------------------------------------------------------------------------------


def committed(overlay: str) -> dict[str, Any]:
    (isvc,) = [r for r in render_overlay(MANIFESTS / "overlays" / overlay) if r["kind"] == "InferenceService"]
    return isvc


@requires_crds
def test_inference_service_is_the_committed_overlay_with_the_new_bundle():
    manifest = render_inference_service("s3://models/ag-news/v7/", model_version="v1.4.2")
    assert crd_errors(manifest) == []
    expected = committed("cpu")
    expected["spec"]["predictor"]["model"].update(storageUri="s3://models/ag-news/v7/", args=["--precision=int8"])
    expected["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] = "v1.4.2"
    assert manifest == expected


@requires_crds
def test_canary_inference_service_matches_the_canary_overlay():
    manifest = render_inference_service("s3://textclf-models/ag-news/export/v2/", canary_traffic_percent=10)
    assert crd_errors(manifest) == []
    expected = committed("canary")
    expected["spec"]["predictor"]["model"]["args"] = ["--precision=int8"]
    assert manifest == expected


@requires_crds
def test_inference_service_options():
    manifest = render_inference_service("gs://bucket/bundle/", name="textclf-fp32", namespace="serving",
                                        precision="fp32", image="registry.example.com/textclf/serving:0.2.0",
                                        canary_traffic_percent=0)
    assert crd_errors(manifest) == []
    assert manifest["metadata"]["name"] == "textclf-fp32" and manifest["metadata"]["namespace"] == "serving"
    model = manifest["spec"]["predictor"]["model"]
    # KServe appends the InferenceService's args to the ServingRuntime's: this --precision comes last and wins.
    assert model["args"] == ["--precision=fp32"] and model["image"].endswith("serving:0.2.0")
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(storage_uri="/mnt/models/bundle"), "must be a URI"),
        (dict(storage_uri="file:///tmp/registry/v1/onnx_model"), "KServe pods cannot read this machine's files"),
        (dict(storage_uri="ftp://host/bundle"), "KServe cannot download"),
        (dict(name="TextClf"), "DNS-1035"),
        (dict(name="1textclf"), "DNS-1035"),
        (dict(namespace="Serving_NS"), "DNS-1123"),
        (dict(canary_traffic_percent=101), r"\[0, 100\]"),
        (dict(canary_traffic_percent=True), r"\[0, 100\]"),
        (dict(precision="fp16"), "precision must be one of"),
    ],
)
def test_inference_service_bad_input(kwargs, message):
    kwargs = {"storage_uri": "s3://bucket/bundle/", **kwargs}
    with pytest.raises(ConfigError, match=message):
        render_inference_service(kwargs.pop("storage_uri"), **kwargs)


@requires_crds
def test_production_inference_service_serves_the_registry_production_bundle(registry, aws):
    manifest = render_production_inference_service(str(registry.store.root), storage_config=aws.s3_config("admin"))
    assert crd_errors(manifest) == []
    storage_uri = manifest["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri == registry.artifact_uri("v0.1.0", "onnx_model") + "/"
    assert manifest["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == "v0.1.0"
    # What KServe's storage initializer will download is really there.
    listed = Store(storage_uri, config=aws.s3_config("admin")).list()
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json", "export_metadata.json"} <= set(listed)


def test_production_inference_service_needs_a_production_version(aws, bucket, tmp_path):
    with pytest.raises(RegistryError, match="has no production version: promote one first"):
        render_production_inference_service(f"s3://{bucket}/empty-registry", storage_config=aws.s3_config("admin"))
    run = make_run(tmp_path / "run")
    local = ModelRegistry(tmp_path / "registry")
    local.promote(local.register(run))
    with pytest.raises(ConfigError, match="KServe pods cannot read this machine's files"):
        render_production_inference_service(str(tmp_path / "registry"))


def test_write_manifest_is_atomic(tmp_path):
    path = tmp_path / "deploy" / "isvc.yaml"
    manifest = render_inference_service("s3://bucket/v1/")
    write_manifest(manifest, path)
    assert yaml.safe_load(path.read_text()) == manifest
    broken = {**manifest, "spec": object()}  # yaml cannot represent it: the write fails half-way
    with pytest.raises(yaml.representer.RepresenterError):
        write_manifest(broken, path)
    assert yaml.safe_load(path.read_text()) == manifest
    assert [p.name for p in path.parent.iterdir()] == ["isvc.yaml"]


def test_kserve_cli(registry, aws_env, tmp_path, capsys):
    registry_uri = str(registry.store.root)
    assert run_cli(["deploy", "--registry-uri", registry_uri, "kserve", "--namespace", "serving"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"]["namespace"] == "serving"
    assert manifest["spec"]["predictor"]["model"]["storageUri"].endswith("/versions/v0.1.0/onnx_model/")

    out = tmp_path / "isvc.yaml"
    assert run_cli(["deploy", "kserve", "--storage-uri", "s3://b/v2/", "--model-version", "v2.0.0",
                    "--canary-traffic-percent", "25", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"manifest": str(out), "storageUri": "s3://b/v2/", "model_version": "v2.0.0"}
    assert yaml.safe_load(out.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 25

    assert run_cli(["deploy", "kserve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom")  # kfp.local, as intended
def test_render_component_under_kfp_local(registry, aws_env, tmp_path, monkeypatch):
    from kfp import dsl

    from textclf.deploy.component import render_inference_service_op
    from textclf.pipelines.local import init_local_runner

    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # restored after the test

    @dsl.pipeline(name="render-isvc-test")
    def render_pipeline(registry_uri: str) -> str:
        return render_inference_service_op(registry_uri=registry_uri, namespace="serving",
                                           canary_traffic_percent=20).outputs["Output"]

    init_local_runner(tmp_path / "pipeline_root")
    task = render_pipeline(registry_uri=str(registry.store.root))
    assert task.output == "v0.1.0"
    (manifest_file,) = (tmp_path / "pipeline_root").rglob("manifest")
    manifest = yaml.safe_load(manifest_file.read_text())
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert manifest["spec"]["predictor"]["model"]["storageUri"].endswith("/versions/v0.1.0/onnx_model/")
