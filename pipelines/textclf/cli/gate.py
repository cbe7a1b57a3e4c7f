"""``textclf gate`` and ``textclf ab-report``. ``components/cli.py`` calls :func:`add_gate_commands` on its
subparsers.

Both commands print JSON on stdout and return 0 (``gate`` returns 0 for "archive" too: read ``decision``); bad
input raises a ``TextclfError`` subclass, which ``textclf.cli.main`` prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def print_json(payload: Any) -> int:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from textclf.gate import GateConfig, decide_from_evaluations

    config = GateConfig(alpha=args.alpha, min_improvement=args.min_improvement)
    decision, context = decide_from_evaluations(args.candidate, args.production, config)
    payload = {**decision.to_dict(), **context}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return print_json(payload)


def cmd_ab_report(args: argparse.Namespace) -> int:
    from textclf.monitor.abtest import ABTestConfig, analyse_ab_log, write_ab_report

    config = ABTestConfig(alpha=args.alpha, control=args.control, treatment=args.treatment,
                          min_labelled=args.min_labelled, control_version=args.control_version,
                          treatment_version=args.treatment_version)
    report = analyse_ab_log(args.log, config, labels=args.labels)
    paths = write_ab_report(report, args.output)
    return print_json({"comparison": report["comparison"], "input": report["input"],
                       "warnings": report["warnings"], "reports": {k: str(v) for k, v in paths.items()}})


def add_gate_commands(subparsers: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add ``gate`` (promotion decision) and ``ab-report`` (canary A/B analysis).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``gate`` and ``ab-report`` parsers.
    """
    gate = subparsers.add_parser(
        "gate", help="promotion decision: McNemar's test plus a minimum accuracy gain, candidate vs production"
    )
    gate.add_argument("--candidate", type=Path, required=True,
                      help="candidate's evaluate-stage directory (or the predictions file in it)")
    gate.add_argument("--production", type=Path, default=None,
                      help="production model's evaluation on the same test set (omit: no production model yet)")
    gate.add_argument("--alpha", type=float, default=0.05, help="McNemar significance level (default 0.05)")
    gate.add_argument("--min-improvement", type=float, default=0.005,
                      help="minimum accuracy gain as a fraction: 0.005 = +0.5 points (default); 0.02 = '+2%%' rule")
    gate.add_argument("--output", type=Path, default=None, help="also write the decision JSON to this file")
    gate.set_defaults(func=cmd_gate)

    ab = subparsers.add_parser("ab-report", help="A/B analysis of a canary's request log (JSON lines)")
    ab.add_argument("--log", type=Path, nargs="+", required=True, help="A/B request log file(s), .gz allowed")
    ab.add_argument("--labels", type=Path, default=None,
                    help="delayed ground truth: JSON lines or CSV with request_id and true_label")
    ab.add_argument("--output", type=Path, required=True, help="directory for ab_report.json/.md/.html")
    ab.add_argument("--alpha", type=float, default=0.05)
    ab.add_argument("--control", default="control", help="control variant name (default: control)")
    ab.add_argument("--treatment", default="treatment", help="treatment variant name (default: treatment)")
    ab.add_argument("--min-labelled", type=int, default=30, help="labelled requests per variant before a verdict")
    ab.add_argument("--control-version", default="", help="model_version meaning control when a record has no variant")
    ab.add_argument("--treatment-version", default="", help="likewise for treatment")
    ab.set_defaults(func=cmd_ab_report)
    return gate, ab
