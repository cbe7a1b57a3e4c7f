"""A KFP recurring run (cron) of the retraining pipeline: the scheduled trigger of the production training system
design (for example weekly), created with ``kfp.Client().create_recurring_run``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from textclf.errors import ConfigError

#: Every Monday at 03:00 (KFP cron has a leading seconds field).
WEEKLY = "0 0 3 * * 1"


@dataclass(frozen=True)
class RecurringRunConfig:
    """A recurring run of the compiled retraining pipeline.

    Attributes:
        kubeflow: Host, token, namespace and experiment (``textclf.deploy.kubeflow.KubeflowConfig``).
        cron_expression: KFP cron, six fields with seconds first (default weekly, Monday 03:00).
        job_name: Name of the recurring run.
        arguments: Retraining-pipeline parameters (checked against the compiled YAML).
        max_concurrency: Runs allowed at once (1: a slow run is never overlapped by the next).
        no_catchup: Skip the runs missed while the schedule was paused.
    """

    kubeflow: Any
    cron_expression: str = WEEKLY
    job_name: str = "textclf-retraining-weekly"
    arguments: Mapping[str, Any] = field(default_factory=dict)
    max_concurrency: int = 1
    no_catchup: bool = True

    def __post_init__(self) -> None:
        if len(self.cron_expression.split()) != 6:
            raise ConfigError(f"cron_expression must have 6 fields (seconds first, as KFP expects), got "
                              f"{self.cron_expression!r}; weekly is {WEEKLY!r}")
        if self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")


def create_recurring_run(config: RecurringRunConfig) -> str:
    """Create the recurring run on the KFP server (the parameters are checked first; nothing is sent on error).

    Returns:
        The recurring run's id.

    Raises:
        ConfigError: Invalid parameters.
        TextclfError: The server refused the request or could not be reached.
    """
    from textclf.deploy.kubeflow import check_arguments, kfp_errors, load_pipeline_package, make_client
    from textclf.trigger.triggers import retraining_package

    package = load_pipeline_package(retraining_package())
    arguments = check_arguments(dict(config.arguments), package)
    host = config.kubeflow.host
    # kfp prints "... details: <link>" lines on stdout; keep stdout for the command's output.
    with contextlib.redirect_stdout(sys.stderr):
        with kfp_errors(host, "connect"):
            client = make_client(config.kubeflow)
        with kfp_errors(host, f"find or create experiment {config.kubeflow.experiment_name!r}"):
            experiment = client.create_experiment(config.kubeflow.experiment_name,
                                                  namespace=config.kubeflow.namespace)
        with kfp_errors(host, f"create recurring run {config.job_name!r}"):
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id, job_name=config.job_name,
                cron_expression=config.cron_expression, max_concurrency=config.max_concurrency,
                no_catchup=config.no_catchup, pipeline_package_path=str(package.path), params=arguments, enabled=True,
            )
    return job.recurring_run_id
