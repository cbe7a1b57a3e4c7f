"""The repository's three distributions and the one direction their imports run.

``serving/`` (textclf-serving) <- ``components/`` (textclf-components) <- ``pipelines/`` (textclf-pipelines): a
distribution imports only itself and the ones to its left. Every ``import textclf...`` in the code is checked,
function-level imports included, so a lazy reverse import fails here as surely as a module-level one.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Distribution folder -> the folders it may import from (itself included).
LAYERS = {
    "serving": ("serving",),
    "components": ("serving", "components"),
    "pipelines": ("serving", "components", "pipelines"),
}
DISTRIBUTIONS = {"serving": "textclf-serving", "components": "textclf-components", "pipelines": "textclf-pipelines"}
#: What the serving image must not carry.
NOT_IN_SERVING = ("torch", "transformers", "kfp", "peft", "bitsandbytes", "tensorrt")


def owner(module: str) -> str:
    """The distribution folder whose files define ``module`` (``textclf.x.y`` lives at ``<folder>/textclf/x/y``)."""
    parts = module.split(".")
    for length in range(len(parts), 1, -1):
        relative = Path(*parts[:length])
        for folder in LAYERS:
            base = REPO_ROOT / folder / relative
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                return folder
    raise AssertionError(f"{module} is not defined in any distribution folder")


def textclf_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a ``textclf`` module in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("textclf.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("textclf"):
            if node.module == "textclf":
                found += [(node.lineno, f"textclf.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(path for path in (REPO_ROOT / folder / "textclf").rglob("*.py") if "__pycache__" not in path.parts)


@pytest.mark.parametrize("folder", list(LAYERS))
def test_imports_run_one_way(folder):
    allowed = LAYERS[folder]
    reverse = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module} (defined in {owner(module)}/)"
        for path in python_files(folder) for line, module in textclf_imports(path) if owner(module) not in allowed
    ]
    assert reverse == [], "\n".join(reverse)


def test_the_check_sees_a_reverse_import(tmp_path):
    """The checker itself: a function-level import of training code from serving is reported."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from textclf.train.train import train\n    import textclf.serving.bundle\n")
    imports = textclf_imports(module)
    assert imports == [(2, "textclf.train.train"), (3, "textclf.serving.bundle")]
    assert [owner(name) for _, name in imports] == ["components", "serving"]


def test_every_module_lives_at_its_import_path():
    """``textclf`` is a PEP 420 namespace: no folder defines ``textclf/__init__.py``, code lives only below
    ``<folder>/textclf/``, and no module name is defined by two distributions."""
    seen: dict[str, str] = {}
    for folder in LAYERS:
        assert not (REPO_ROOT / folder / "textclf" / "__init__.py").exists(), folder
        stray = [p for p in (REPO_ROOT / folder).rglob("*.py") if "textclf" not in p.relative_to(REPO_ROOT / folder).parts]
        assert stray == [], f"code outside {folder}/textclf/: {stray}"
        for path in python_files(folder):
            name = ".".join(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            assert name not in seen, f"{name} defined in {seen.get(name)}/ and {folder}/"
            seen[name] = folder


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s;<>=!~\[]", line, maxsplit=1)[0].lower().replace("_", "-") for line in requirements}


def test_serving_distribution_declares_no_training_dependencies():
    declared = tomllib.loads((REPO_ROOT / "serving" / "pyproject.toml").read_text())["project"]["dependencies"]
    names = requirement_names(declared)
    assert not names & set(NOT_IN_SERVING), names & set(NOT_IN_SERVING)
    assert {"kserve", "onnxruntime", "tokenizers"} <= names
    installed = requirement_names(importlib.metadata.requires("textclf-serving") or [])
    assert installed == names, "the installed textclf-serving is stale: run make install"


@pytest.mark.parametrize("folder", list(LAYERS))
def test_distributions_depend_one_way(folder):
    """Each pyproject names only the distributions to its left, and the console script lives at the top."""
    project = tomllib.loads((REPO_ROOT / folder / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTIONS[folder]
    ours = {name for name in requirement_names(project["dependencies"]) if name.startswith("textclf")}
    assert ours == {DISTRIBUTIONS[other] for other in LAYERS[folder] if other != folder}
    assert ("scripts" in project) == (folder == "pipelines")
