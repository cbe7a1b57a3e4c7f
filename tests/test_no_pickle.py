"""No untrusted deserialisation in the product: models and data are loaded only as safetensors, ONNX, JSON,
parquet and skops with an explicit list of trusted types. This test reads every module of the three distributions
(their syntax trees, so comments and docstrings do not count) and fails on any call that can run code from a file:
pickle/cloudpickle/dill/joblib loads, pandas ``read_pickle``, numpy loads with ``allow_pickle=True``, ``torch.load``
without ``weights_only=True``, ``yaml.load`` / ``unsafe_load`` (``safe_load`` only), ``skops.io.load`` without
``trusted=``, and ``eval``/``exec``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for part in ("components", "serving", "pipelines") for p in (ROOT / part).rglob("*.py")
                 if ".egg-info" not in str(p))
#: Modules whose every ``load``-like call deserialises with code execution.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"read_pickle", "unsafe_load", "full_load"}
#: Builtins that run code from a string (``model.eval()``, a method, is not one of them).
UNSAFE_BUILTINS = {"eval", "exec"}


def _name(node: ast.AST) -> str:
    """``a.b.c`` of a call's function (``""`` when it is not a plain dotted name)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def problems(tree: ast.AST) -> list[str]:
    found = []
    imported_unsafe = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                top = (module or alias.name).split(".")[0]
                if top in UNSAFE_MODULES:
                    imported_unsafe.add(alias.asname or alias.name)
                    found.append(f"line {node.lineno}: imports {module or alias.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"line {node.lineno}: {name}()"
        if last in UNSAFE_CALLS or (isinstance(node.func, ast.Name) and name in UNSAFE_BUILTINS):
            found.append(where)
        elif name.split(".")[0] in UNSAFE_MODULES | imported_unsafe and last.startswith("load"):
            found.append(where)
        elif name in ("torch.load",):
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(where + " without weights_only=True")
        elif last in ("load", "loadtxt") and name.split(".")[0] in ("np", "numpy"):
            allow = _keyword(node, "allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(where + " with allow_pickle=True")
        elif name in ("yaml.load",):
            found.append(where + " (use yaml.safe_load)")
        elif name.endswith("sio.load") or name == "skops.io.load":
            if _keyword(node, "trusted") is None:
                found.append(where + " without an explicit trusted list")
    return found


def test_the_scan_finds_what_it_must():
    bad = ast.parse("import pickle\nimport torch, yaml, numpy as np, pandas as pd\n"
                    "pickle.loads(b'')\ntorch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
                    "yaml.load(s)\nnp.load('x.npy', allow_pickle=True)\npd.read_pickle('f')\n"
                    "from joblib import load\nload('m.joblib')\neval('1')\nmodel.eval()\n")
    assert len(problems(bad)) == 10
    good = ast.parse("import torch, yaml, numpy as np\ntorch.load('m.pt', weights_only=True)\nyaml.safe_load(s)\n"
                     "np.load('x.npy')\nimport skops.io as sio\nsio.load(p, trusted=['a'])\n")
    assert problems(good) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_untrusted_deserialisation(path):
    assert len(SOURCES) > 100  # the three distributions were found
    assert problems(ast.parse(path.read_text(encoding="utf-8"))) == [], path
