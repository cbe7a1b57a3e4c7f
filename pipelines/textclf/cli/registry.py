"""``textclf registry ...`` commands. ``components/cli.py`` calls :func:`add_registry_commands` on its subparsers.

Each command prints JSON on stdout and returns 0; a refused request raises a ``TextclfError`` subclass, which
``textclf.cli.main`` prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError

REGISTRY_URI_ENV = "TEXTCLF_REGISTRY_URI"


def registry_from_args(args: argparse.Namespace) -> Any:
    """The registry named by ``--registry-uri`` or ``$TEXTCLF_REGISTRY_URI``.

    Raises:
        ConfigError: Neither is set.
    """
    from textclf.registry import ModelRegistry

    uri = args.registry_uri or os.environ.get(REGISTRY_URI_ENV, "")
    if not uri:
        raise ConfigError(
            f"no registry: pass --registry-uri or set {REGISTRY_URI_ENV} (s3://, gs://, file:// or a path)"
        )
    return ModelRegistry(uri)


def print_json(payload: Any) -> int:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    return print_json({"production": registry.production_version(), "versions": registry.list_versions()})


def cmd_show(args: argparse.Namespace) -> int:
    return print_json(registry_from_args(args).show(args.version))


def cmd_compare(args: argparse.Namespace) -> int:
    return print_json(registry_from_args(args).compare(args.first, args.second))


def cmd_promote(args: argparse.Namespace) -> int:
    return print_json(registry_from_args(args).promote(args.version, reason=args.reason))


def cmd_rollback(args: argparse.Namespace) -> int:
    return print_json(registry_from_args(args).rollback())


def cmd_archive(args: argparse.Namespace) -> int:
    return print_json(registry_from_args(args).archive(args.version, reason=args.reason))


def cmd_card(args: argparse.Namespace) -> int:
    print(registry_from_args(args).card(args.version, html=args.html))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from textclf.registry import ArtifactDirs

    dirs = ArtifactDirs(model=args.model_dir, onnx_model=args.onnx_dir, evaluation=args.evaluation_dir)
    version = registry_from_args(args).register(dirs, version=args.version, notes=args.notes)
    return print_json({"registered": version})


def add_registry_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``registry`` with its sub-commands (list, show, card, compare, promote, rollback, archive, register).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``registry`` parser.
    """
    registry = subparsers.add_parser("registry", help="model registry: list, show, compare, promote, roll back")
    registry.add_argument("--registry-uri", default="",
                          help=f"registry root: s3://, gs://, file:// or a path (default: ${REGISTRY_URI_ENV})")
    commands = registry.add_subparsers(dest="registry_command", required=True)

    commands.add_parser("list", help="every version with its status and headline metrics").set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="a version's status and full metadata")
    show.add_argument("version")
    show.set_defaults(func=cmd_show)

    card = commands.add_parser("card", help="a version's model card (Markdown; --html for the page)")
    card.add_argument("version")
    card.add_argument("--html", action="store_true", help="print the self-contained HTML page instead")
    card.set_defaults(func=cmd_card)

    compare = commands.add_parser("compare", help="metrics of two versions side by side (same test set only)")
    compare.add_argument("first")
    compare.add_argument("second")
    compare.set_defaults(func=cmd_compare)

    promote = commands.add_parser("promote", help="make a version the production version")
    promote.add_argument("version")
    promote.add_argument("--reason", default="", help="recorded in the registry history")
    promote.set_defaults(func=cmd_promote)

    commands.add_parser("rollback", help="restore the previous production version").set_defaults(func=cmd_rollback)

    archive = commands.add_parser("archive", help="retire a candidate version")
    archive.add_argument("--reason", default="", help="recorded in the registry history")
    archive.add_argument("version")
    archive.set_defaults(func=cmd_archive)

    register = commands.add_parser("register", help="copy a run's model, ONNX bundle and evaluation into the registry")
    register.add_argument("--model-dir", type=Path, required=True, help="train-stage output")
    register.add_argument("--onnx-dir", type=Path, required=True, help="export-stage output")
    register.add_argument("--evaluation-dir", type=Path, required=True, help="evaluate-stage output directory")
    register.add_argument("--version", default="", help="vMAJOR.MINOR.PATCH (default: the next patch version)")
    register.add_argument("--notes", default="")
    register.set_defaults(func=cmd_register)
    return registry
