"""Every manifest scanned by checkov (Kubernetes framework) with zero failed checks; each skipped check is an
exception with its reason in ``manifests/.checkov.yaml``, and is still needed (without the skips, exactly those
checks fail). And every workload our manifests define meets the restricted Pod Security Standard, including the
custom resources checkov does not read (ServingRuntime, InferenceService, TrainingRuntime).

checkov runs from its own virtual environment (``make checkov``: its pins would downgrade boto3/botocore in
``.venv``); ``.ci/run`` creates it. Without it these tests fail when ``$CI`` is set and are skipped otherwise.
``skip-download`` keeps checkov off the network (it would otherwise call the Prisma Cloud API)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
CONFIG = MANIFESTS / ".checkov.yaml"
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def checkov() -> Path:
    if CHECKOV.is_file():
        return CHECKOV
    if os.environ.get("CI"):
        pytest.fail(f"{CHECKOV} not found: .ci/run creates it (make checkov)")
    pytest.skip(f"{CHECKOV} not found: run `make checkov`")


def scan(directory: Path) -> dict:
    """checkov's JSON report of ``directory`` (it reads ``.checkov.yaml`` from there when present)."""
    done = subprocess.run([str(checkov()), "-d", str(directory), "--framework", "kubernetes", "--skip-download",
                           "--quiet", "-o", "json"], capture_output=True, text=True, timeout=300, cwd=directory)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "prismacloud" not in done.stderr, "checkov tried the network"
    report = json.loads(done.stdout)
    (report,) = report if isinstance(report, list) else [report]
    return report


def skipped_checks() -> dict[str, str]:
    """Check id -> the comment above it in the config (its reason)."""
    reasons, comment = {}, []
    for line in CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif match := re.fullmatch(r"- (CKV2?_K8S_\d+)", stripped):
            reasons[match.group(1)] = " ".join(comment)
            comment = []
        else:
            comment = []
    assert set(reasons) == set(yaml.safe_load(CONFIG.read_text())["skip-check"])
    return reasons


def test_every_manifest_passes_checkov_with_reviewed_exceptions_only():
    report = scan(MANIFESTS)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] >= 20, summary
    failed = [(f["check_id"], f["file_path"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert not failed and summary["failed"] == 0, failed
    for check, reason in skipped_checks().items():
        assert len(reason) > 80, f"{check}: the exception needs its reason in {CONFIG.name}"


def test_each_exception_is_still_needed(tmp_path):
    """Without the config, exactly the skipped checks fail: no exception outlives its cause."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests", ignore=shutil.ignore_patterns(".checkov.yaml"))
    report = scan(tmp_path / "manifests")
    assert {f["check_id"] for f in report["results"]["failed_checks"]} == set(skipped_checks())


def _pod_specs() -> list[tuple[str, dict, list[dict]]]:
    """(where, pod-level spec, containers) of every workload in manifests/ that lists its containers, custom
    resources included. An InferenceService whose predictor names a ``model`` runs in its ServingRuntime's
    container (checked as the ServingRuntime); kustomize patches are not workloads."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.append((where, node, node["containers"]))
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.stem.endswith("-patch"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") not in ("Kustomization", None):
                walk(doc.get("spec", {}), f"{path.relative_to(REPO_ROOT)}:{doc['kind']}")
    return found


def test_every_workload_meets_the_restricted_pod_security_standard():
    """The restricted profile's rules (kubernetes.io/docs/concepts/security/pod-security-standards): non-root,
    no privilege escalation, all capabilities dropped, a RuntimeDefault seccomp profile, no host namespaces, host
    paths or privileged containers. A container's securityContext may inherit from its pod's."""
    specs = _pod_specs()
    kinds = {where.split(":")[1].split(".")[0] for where, _, _ in specs}
    assert {"Deployment", "ServingRuntime", "InferenceService", "TrainingRuntime"} <= kinds, kinds
    for where, pod, containers in specs:
        pod_context = pod.get("securityContext") or {}
        assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC")), where
        assert not any("hostPath" in v for v in pod.get("volumes") or []), where
        for container in containers:
            context = {**pod_context, **(container.get("securityContext") or {})}
            name = f"{where}/{container.get('name', 'model')}"
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 1) != 0, name
            assert context.get("allowPrivilegeEscalation") is False and not context.get("privileged"), name
            assert "ALL" in (context.get("capabilities") or {}).get("drop", []), name
            assert not (context.get("capabilities") or {}).get("add"), name
            assert (context.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost"), name
