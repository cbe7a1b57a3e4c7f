"""KServe manifests (``manifests/``) and the serving image (``images/serving/Dockerfile``), checked without a cluster.

* Every kustomization is rendered the way ``kubectl apply -k`` would (resources, then patches as JSON merge patches,
  which is how kustomize applies a strategic-merge patch to a custom resource), after checking that every listed
  file exists and every patch targets exactly one resource.
* InferenceService, ServingRuntime and InferenceGraph objects are validated against the ``openAPIV3Schema`` of
  KServe's real CRDs (``../shared/schemas/kserve/full/``) with jsonschema, made strict the way ``kubectl apply``
  (server-side field validation ``Strict``) is: unknown fields are errors, not silently pruned.
* Core kinds (ServiceAccount, Secret) are validated with kubernetes-validate in strict mode against Kubernetes
  ``K8S_VERSION``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = sorted(p.parent for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
CRD_DIR = REPO_ROOT.parent / "shared" / "schemas" / "kserve" / "full"
#: Kubernetes version whose bundled schemas kubernetes-validate uses for the core kinds.
K8S_VERSION = "1.30.0"
SERVING_IMAGE = "ghcr.io/textclf-pipelines/serving:0.1.0"
#: (kind, apiVersion) -> (CRD file, served version) of the custom resources we write.
CRDS = {
    ("InferenceService", "serving.kserve.io/v1beta1"): ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    ("ServingRuntime", "serving.kserve.io/v1alpha1"): ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    ("InferenceGraph", "serving.kserve.io/v1alpha1"): ("serving.kserve.io_inferencegraphs.yaml", "v1alpha1"),
}
#: ClusterServingRuntimes KServe installs, which InferenceServices may name without defining them here.
CLUSTER_RUNTIMES = {"kserve-tritonserver"}
PLACEHOLDER = re.compile(r"^REPLACE_ME_[A-Z_]+$")

requires_crds = pytest.mark.skipif(
    not (CRD_DIR / CRDS[("InferenceService", "serving.kserve.io/v1beta1")][0]).is_file(),
    reason=f"KServe CRDs not found at {CRD_DIR} (../shared/schemas/kserve/full/): schema validation skipped",
)


# --- rendering the kustomizations -------------------------------------------------------------------------------


def _load_documents(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (maps merge recursively, lists and scalars replace, null deletes)."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


def _matches(resource: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": resource["kind"], "name": resource["metadata"]["name"]}
    return all(wanted[key] == value for key, value in target.items())


def _apply_patches(directory: Path, kustomization: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    for entry in kustomization.get("patches", []):
        patch_path = directory / entry["path"]
        assert patch_path.is_file(), f"{directory}/kustomization.yaml: patch {entry['path']} does not exist"
        (patch,) = _load_documents(patch_path)
        target = entry.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
        hits = [i for i, resource in enumerate(resources) if _matches(resource, target)]
        assert len(hits) == 1, f"{patch_path}: target {target} matches {len(hits)} resources, expected 1"
        resources[hits[0]] = _merge_patch(resources[hits[0]], {k: v for k, v in patch.items() if k != "metadata"})


@functools.lru_cache(maxsize=None)
def _build(directory: Path) -> tuple[str, ...]:
    """``kustomize build directory``, as JSON strings (cached; callers get fresh copies)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization", f"{directory}: not a Kustomization"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml lists {entry}, which does not exist"
        resources += render(path) if path.is_dir() else _load_documents(path)
    _apply_patches(directory, kustomization, resources)
    for pairs in kustomization.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(pairs["pairs"])
    return tuple(json.dumps(resource) for resource in resources)


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl apply -k directory`` would create."""
    return [json.loads(resource) for resource in _build(directory.resolve())]


def all_rendered() -> list[tuple[str, dict[str, Any]]]:
    """(overlay name, resource) for every resource of every overlay."""
    return [(overlay.name, resource) for overlay in OVERLAYS for resource in render(overlay)]


def secret_templates() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.template.yaml"))


# --- schema validation ------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever the CRD lists the fields of an object."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft4Validator:
    """A validator for ``kind`` built from the CRD's ``openAPIV3Schema`` of the named version."""
    filename, version = CRDS[(kind, api_version)]
    with open(CRD_DIR / filename, encoding="utf-8") as handle:
        crd = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return jsonschema.Draft4Validator(_strict(served["schema"]["openAPIV3Schema"]))


def crd_errors(resource: dict[str, Any]) -> list[str]:
    validator = crd_validator(resource["kind"], resource["apiVersion"])
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(resource)]


def core_errors(resource: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def _is_custom(resource: dict[str, Any]) -> bool:
    return (resource["kind"], resource["apiVersion"]) in CRDS


# --- layout -----------------------------------------------------------------------------------------------------


def test_every_overlay_renders_with_existing_files_and_targets():
    assert {overlay.name for overlay in OVERLAYS} == {
        "cpu", "custom-container", "gpu-triton", "canary", "cascade-graph"}
    inference_services = {"cascade-graph": 2}  # its two stages (tests/test_inference_graph.py)
    for overlay in OVERLAYS:
        resources = render(overlay)  # asserts listed files exist and every patch hits exactly one resource
        ids = [(r["kind"], r["metadata"]["name"]) for r in resources]
        assert len(ids) == len(set(ids)), f"{overlay.name}: duplicate resources {ids}"
        count = sum(r["kind"] == "InferenceService" for r in resources)
        assert count == inference_services.get(overlay.name, 1), overlay.name


def test_every_manifest_file_is_used():
    """Each YAML file is listed by a kustomization, used as a patch, or is the Secret template."""
    listed = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        entries = content.get("resources", []) + [p["path"] for p in content.get("patches", [])]
        listed |= {(kustomization.parent / entry).resolve() for entry in entries}
    files = {p.resolve() for p in MANIFESTS.rglob("*.yaml")
             if p.name not in ("kustomization.yaml", ".checkov.yaml")}  # checkov's settings, not a manifest
    assert files - listed == {p.resolve() for p in secret_templates()}


def test_patch_on_a_missing_resource_is_caught(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(MANIFESTS / "overlays" / "cpu")],
        "patches": [{"path": "patch.yaml", "target": {"kind": "InferenceService", "name": "textclf-typo"}}],
    }))
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"}}))
    with pytest.raises(AssertionError, match=r"matches 0 resources, expected 1"):
        render(tmp_path)


def test_canary_overlay_routes_ten_percent_to_the_new_model():
    (stable,) = [r for r in render(MANIFESTS / "overlays" / "cpu") if r["kind"] == "InferenceService"]
    (canary,) = [r for r in render(MANIFESTS / "overlays" / "canary") if r["kind"] == "InferenceService"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary["spec"]["predictor"]["model"]["storageUri"] != stable["spec"]["predictor"]["model"]["storageUri"]
    assert canary["spec"]["predictor"]["model"]["runtime"] == stable["spec"]["predictor"]["model"]["runtime"]
    assert canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_references_resolve():
    """Named runtimes and service accounts exist in the same overlay (or are KServe's cluster runtimes)."""
    for overlay in OVERLAYS:
        resources = render(overlay)
        names = {(r["kind"], r["metadata"]["name"]) for r in resources}
        for isvc in (r for r in resources if r["kind"] == "InferenceService"):
            for component in ("predictor", "transformer"):
                spec = isvc["spec"].get(component)
                if spec is None:
                    continue
                assert ("ServiceAccount", spec["serviceAccountName"]) in names, f"{overlay.name}/{component}"
                runtime = spec.get("model", {}).get("runtime")
                if runtime:
                    assert ("ServingRuntime", runtime) in names or runtime in CLUSTER_RUNTIMES, overlay.name


def test_serving_runtime_args_and_formats():
    (runtime,) = [r for r in render(MANIFESTS / "base") if r["kind"] == "ServingRuntime"]
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == SERVING_IMAGE
    assert "--model-name={{.Name}}" in container["args"] and "--model-dir=/mnt/models" in container["args"]
    assert [f["name"] for f in runtime["spec"]["supportedModelFormats"]] == ["onnx"]
    assert runtime["spec"]["protocolVersions"] == ["v1", "v2"]


def test_triton_overlay_pairs_triton_with_the_transformer():
    (isvc,) = [r for r in render(MANIFESTS / "overlays" / "gpu-triton") if r["kind"] == "InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert (model["runtime"], model["modelFormat"]["name"]) == ("kserve-tritonserver", "triton")
    assert model["storageUri"].startswith("s3://") and model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (transformer,) = isvc["spec"]["transformer"]["containers"]
    assert transformer["image"] == SERVING_IMAGE
    # KServe appends --predictor_host; --model_name is given so that it names the Triton model, not the service.
    assert transformer["args"][:2] == ["--model_name", "textclf"]
    assert not any(arg.startswith("--predictor") and "host" in arg for arg in transformer["args"])


def test_serving_image_args_are_the_servers_flags():
    """Every container of the serving image gets arguments ``python -m textclf.serving`` parses (after KServe's
    ``{{.Name}}`` substitution, with the flags KServe appends to a transformer), for the bundle where KServe's storage
    initializer puts it and the port its probes use; a rendered InferenceService's args, appended to the runtime's,
    set the precision."""
    from textclf.deploy.kserve import KSERVE_MODEL_DIR, render_inference_service
    from textclf.serving.__main__ import config_from_args
    from textclf.serving.config import Precision

    appended_by_kserve = {
        "transformer": ["--predictor_host", "textclf-triton-predictor.serving", "--http_port", "8080"],
    }
    checked = set()
    for overlay, resource in all_rendered():
        for where, container in _containers(resource):
            if container.get("image") != SERVING_IMAGE:
                continue
            args = [arg.replace("{{.Name}}", "textclf") for arg in container["args"]]
            config = config_from_args([*args, *appended_by_kserve.get(where.split("/")[0], [])])
            ports = {port["containerPort"] for port in container["ports"]}
            ports |= {container[probe]["httpGet"]["port"] for probe in ("readinessProbe", "livenessProbe")}
            assert (config.model_dir, ports) == (KSERVE_MODEL_DIR, {config.http_port}), (overlay, where)
            checked.add((overlay, where))
    assert {("cpu", "runtime/kserve-container"), ("custom-container", "predictor/kserve-container"),
            ("gpu-triton", "transformer/kserve-container")} <= checked
    (runtime,) = [r for r in render(MANIFESTS / "base") if r["kind"] == "ServingRuntime"]
    runtime_args = [arg.replace("{{.Name}}", "textclf") for arg in runtime["spec"]["containers"][0]["args"]]
    for precision in Precision:
        appended = render_inference_service("s3://bucket/v1/", precision=precision.value)["spec"]["predictor"]
        assert config_from_args([*runtime_args, *appended["model"]["args"]]).precision is precision


# --- schemas ----------------------------------------------------------------------------------------------------


@requires_crds
@pytest.mark.parametrize("overlay", [o.name for o in OVERLAYS])
def test_custom_resources_match_the_kserve_crds(overlay):
    resources = [r for r in render(MANIFESTS / "overlays" / overlay) if _is_custom(r)]
    assert resources
    for resource in resources:
        assert crd_errors(resource) == [], f"{overlay}: {resource['kind']} {resource['metadata']['name']}"


@pytest.mark.parametrize("overlay", [o.name for o in OVERLAYS])
def test_core_resources_match_kubernetes_schemas(overlay):
    core = [r for r in render(MANIFESTS / "overlays" / overlay) if not _is_custom(r)]
    assert {r["kind"] for r in core} == {"ServiceAccount"}
    for resource in core:
        assert core_errors(resource) == [], f"{overlay}: {resource['kind']} {resource['metadata']['name']}"


def test_secret_template_matches_kubernetes_schema():
    (template,) = secret_templates()
    (secret,) = _load_documents(template)
    assert core_errors(secret) == []


@requires_crds
@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda isvc: isvc["spec"]["predictor"].update(minReplicas="one"),
         r"predictor/minReplicas: 'one' is not of type 'integer'"),
        (lambda isvc: isvc["spec"]["predictor"]["model"].update(storageURI="s3://x"),
         r"'storageURI' was unexpected"),
        (lambda isvc: isvc["spec"]["predictor"]["model"]["modelFormat"].pop("name"),
         r"'name' is a required property"),
        (lambda isvc: isvc["spec"]["predictor"]["model"]["resources"].update(limits=["cpu"]),
         r"is not of type 'object'"),
    ],
    ids=["wrong-type", "unknown-field", "missing-required", "list-for-map"],
)
def test_schema_validation_catches_broken_inference_services(mutate, error):
    (isvc,) = [r for r in render(MANIFESTS / "overlays" / "cpu") if r["kind"] == "InferenceService"]
    mutate(isvc)
    errors = crd_errors(isvc)
    assert any(re.search(error, message) for message in errors), errors


@requires_crds
def test_schema_validation_catches_a_broken_serving_runtime():
    (runtime,) = [r for r in render(MANIFESTS / "base") if r["kind"] == "ServingRuntime"]
    del runtime["spec"]["containers"]
    runtime["spec"]["protocolVersions"] = "v2"
    errors = crd_errors(runtime)
    assert any("'containers' is a required property" in e for e in errors), errors
    assert any("'v2' is not of type 'array'" in e for e in errors), errors


def test_core_validation_catches_broken_resources():
    (account,) = [r for r in render(MANIFESTS / "base") if r["kind"] == "ServiceAccount"]
    account["automountServiceAccountToken"] = "no"
    assert any("'no' is not of type 'boolean'" in e for e in core_errors(account))
    account = {**account, "automountServiceAccountToken": False, "secretz": []}
    assert core_errors(account), "strict mode must reject unknown fields"


# --- security ---------------------------------------------------------------------------------------------------


def _containers(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, container) for every container spec the resource defines."""
    if resource["kind"] == "ServingRuntime":
        return [(f"runtime/{c['name']}", c) for c in resource["spec"]["containers"]]
    if resource["kind"] != "InferenceService":
        return []
    found = []
    for component in ("predictor", "transformer"):
        spec = resource["spec"].get(component) or {}
        found += [(f"{component}/{c['name']}", c) for c in spec.get("containers", [])]
        if "model" in spec:
            found.append((f"{component}/model", spec["model"]))
    return found


def test_every_container_is_locked_down_probed_and_sized():
    for overlay, resource in all_rendered():
        for where, container in _containers(resource):
            label = f"{overlay}: {resource['metadata']['name']} {where}"
            if resource["kind"] == "InferenceService" and container.get("runtime") == "textclf-onnx":
                continue  # container fields come from the ServingRuntime, checked there
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, label
            assert context.get("readOnlyRootFilesystem") is True, label
            assert context.get("allowPrivilegeEscalation") is False, label
            assert context.get("capabilities", {}).get("drop") == ["ALL"], label
            assert {"readinessProbe", "livenessProbe"} <= set(container), label
            assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", label
            assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", label
            assert {"requests", "limits"} <= set(container.get("resources", {})), label


def test_pods_run_as_non_root():
    for overlay, resource in all_rendered():
        if resource["kind"] != "InferenceService":
            continue
        for component in ("predictor", "transformer"):
            spec = resource["spec"].get(component)
            if spec is not None:
                assert spec["securityContext"]["runAsNonRoot"] is True, f"{overlay}/{component}"


def test_no_real_secret_values_are_committed():
    for path in MANIFESTS.rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----", text), path
        for document in _load_documents(path):
            if document.get("kind") != "Secret":
                continue
            assert "data" not in document, f"{path}: base64 data in a committed Secret"
            values = document.get("stringData", {})
            assert values and all(PLACEHOLDER.match(str(v)) for v in values.values()), f"{path}: {values}"
            assert path in secret_templates(), f"{path}: Secrets must be *.template.yaml, outside kustomize"


def test_secret_template_carries_the_kserve_s3_settings():
    (secret,) = _load_documents(secret_templates()[0])
    annotations = secret["metadata"]["annotations"]
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps", "serving.kserve.io/s3-region"} <= set(
        annotations)
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    (account,) = [r for r in render(MANIFESTS / "base") if r["kind"] == "ServiceAccount"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]


# --- serving image ----------------------------------------------------------------------------------------------


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def test_serving_image_has_no_torch_runs_as_non_root_and_starts_the_server():
    instructions = _dockerfile_instructions(REPO_ROOT / "images" / "serving" / "Dockerfile")
    commands = [part.strip() for op, args in instructions if op == "RUN" for part in args.split("&&")]
    installs = " ".join(part for part in commands if part.startswith("pip install"))
    assert installs, "no pip install in the serving image"
    assert not re.search(r"\b(torch|transformers)\b", installs), "the serving image must not install torch/transformers"
    assert not re.search(r"(-r|--requirement)\s", installs), "installs the full pin file (which has torch)"
    assert re.search(r"--constraint \S+ \./serving(\s|$)", installs), "installs the serving distribution, pinned"
    constraints = next(part for part in commands if "requirements.txt" in part and ">" in part)
    assert constraints.startswith("sed") and "/tmp/constraints.txt" in constraints, constraints
    copied = {source for op, args in instructions if op == "COPY" for source in shlex.split(args)[:-1]}
    assert copied == {"requirements.txt", "serving"}, copied
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert "--uid 10001" in " ".join(commands)  # above 10000: no clash with a host user (CKV_K8S_40)
    assert [args for op, args in instructions if op == "ENTRYPOINT"][-1] == '["python", "-m", "textclf.serving"]'


def test_serving_image_modules_import_without_torch_or_training_code(tmp_path):
    """What the serving image installs: a regular (non-editable) install of serving/ alone. The server, Triton's
    generator and the storage clients import from it with torch, transformers, kfp and the training stages blocked,
    and ``textclf`` resolves to that install only: serving depends on nothing from training."""
    import subprocess
    import sys
    import sysconfig

    import shutil

    target, source = tmp_path / "site", tmp_path / "serving"  # a copy: the build leaves nothing in the checkout
    shutil.copytree(REPO_ROOT / "serving", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", "--target",
         str(target), str(source)], capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    blocked = ["torch", "transformers", "peft", "kfp", "textclf.train", "textclf.evaluate", "textclf.export"]
    # -S: no site hooks, so the editable finders of this checkout stay out; the venv's packages (kserve, ...) are
    # appended after the serving install.
    code = (
        f"import sys; sys.path[:0] = [sys.argv[1]]; sys.path.append(sys.argv[2]); "
        f"sys.modules.update({{name: None for name in {blocked!r}}}); "
        "import textclf, textclf.serving.server, textclf.serving.triton, textclf.storage.s3, textclf.storage.gcs; "
        "assert list(textclf.__path__) == [sys.argv[1] + '/textclf'], textclf.__path__"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code, str(target), sysconfig.get_paths()["purelib"]],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_component_image_install_ships_every_package_and_pipeline_yaml(tmp_path):
    """What the component images do: a regular (non-editable) install of the three distributions. Every module of
    serving/, components/ and pipelines/ and every compiled YAML must be in their wheels."""
    import shutil
    import subprocess
    import sys
    import zipfile

    shipped, expected = set(), set()
    for folder in ("serving", "components", "pipelines"):
        source = tmp_path / "src" / folder  # a copy: the build leaves nothing in the checkout
        shutil.copytree(REPO_ROOT / folder, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
             str(tmp_path / folder), str(source)], capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        [wheel] = (tmp_path / folder).glob("*.whl")
        shipped |= {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("textclf/")}
        for path in (REPO_ROOT / folder / "textclf").rglob("*"):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                expected.add(path.relative_to(REPO_ROOT / folder).as_posix())
    assert expected and not any(name.startswith("textclf/__init__") for name in shipped)
    assert expected - shipped == set(), "missing from the installed package (pyproject.toml packages?)"
