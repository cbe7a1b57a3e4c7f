"""``textclf deploy ...`` commands. ``components/cli.py`` calls :func:`add_deploy_commands` on its subparsers.

Each command prints JSON on stdout (``deploy kserve`` without ``--output`` prints the manifest as YAML, ready for
``kubectl apply -f -``) and returns 0; a refused request raises a ``TextclfError`` subclass, which
``textclf.cli.main`` prints and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from textclf.errors import ConfigError
from textclf.cli.registry import REGISTRY_URI_ENV, print_json

GOOGLE_PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict (values still strings).

    Raises:
        ConfigError: An item without ``=``, or a name given twice.
    """
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param takes NAME=VALUE, got {pair!r}")
        if name in params:
            raise ConfigError(f"--param {name} given twice")
        params[name] = value
    return params


def registry_uri_from(args: argparse.Namespace) -> str:
    return args.registry_uri or os.environ.get(REGISTRY_URI_ENV, "")


def package_path(args: argparse.Namespace) -> Path:
    from textclf.pipelines.compile import default_pipeline_package

    return args.package or default_pipeline_package(args.pipeline)


def typed_params(args: argparse.Namespace) -> dict[str, Any]:
    from textclf.deploy.kubeflow import coerce_arguments, load_pipeline_package

    return coerce_arguments(parse_params(args.param), load_pipeline_package(package_path(args)))


def caching(value: str) -> bool | None:
    return {"default": None, "on": True, "off": False}[value]


# --- commands ---------------------------------------------------------------------------------------------------


def cmd_kserve(args: argparse.Namespace) -> int:
    from textclf.deploy.kserve import (
        manifest_yaml,
        render_inference_service,
        render_production_inference_service,
        write_manifest,
    )

    options = dict(name=args.name, namespace=args.namespace or None, canary_traffic_percent=args.canary_traffic_percent,
                   precision=args.precision, image=args.image or None)
    registry_uri = registry_uri_from(args)
    if args.storage_uri:
        manifest = render_inference_service(args.storage_uri, model_version=args.model_version or None, **options)
    elif registry_uri:
        manifest = render_production_inference_service(registry_uri, **options)
    else:
        raise ConfigError(f"nothing to serve: pass --storage-uri, or --registry-uri (or set {REGISTRY_URI_ENV}) "
                          f"to serve the registry's production version")
    if args.output == "-":
        sys.stdout.write(manifest_yaml(manifest))
        return 0
    path = write_manifest(manifest, args.output)
    model = manifest["spec"]["predictor"]["model"]
    return print_json({"manifest": str(path), "storageUri": model["storageUri"],
                       "model_version": manifest["metadata"].get("annotations", {}).get(
                           "textclf-pipelines/model-version")})


def cmd_kubeflow(args: argparse.Namespace) -> int:
    from textclf.deploy.kubeflow import KubeflowConfig, submit_kubeflow_run

    config = KubeflowConfig.from_env(
        host=args.host, token=args.token, namespace=args.namespace or None, pipeline_package=package_path(args),
        pipeline_name=args.pipeline_name, experiment_name=args.experiment, run_name=args.run_name,
        arguments=typed_params(args), pipeline_root=args.pipeline_root or None,
        service_account=args.service_account or None, enable_caching=caching(args.caching),
        upload=not args.no_upload,
    )
    return print_json(submit_kubeflow_run(config).to_dict())


def cmd_vertex_pipeline(args: argparse.Namespace) -> int:
    from textclf.deploy.vertex import VertexPipelineConfig, build_pipeline_job, submit_vertex_pipeline

    config = VertexPipelineConfig(
        project=args.project, location=args.location, pipeline_root=args.pipeline_root,
        pipeline_package=package_path(args), display_name=args.display_name, job_id=args.job_id or None,
        arguments=typed_params(args), service_account=args.service_account or None, network=args.network or None,
        enable_caching=caching(args.caching),
    )
    if args.dry_run:
        from google.auth.credentials import AnonymousCredentials

        job = build_pipeline_job(config, credentials=AnonymousCredentials())
        return print_json({"parent": f"projects/{config.project}/locations/{config.location}",
                           "pipeline_job_id": job.job_id, "service_account": config.service_account,
                           "network": config.network, "pipeline_job": job.to_dict()})
    return print_json(submit_vertex_pipeline(config).to_dict())


def cmd_vertex_model(args: argparse.Namespace) -> int:
    from textclf.deploy.kserve import production_artifact_uri
    from textclf.deploy.vertex import (
        VertexModelConfig,
        build_endpoint_deploy_request,
        build_model_upload_request,
        deploy_vertex_endpoint,
    )

    version, artifact_uri = args.model_version or None, args.artifact_uri
    registry_uri = registry_uri_from(args)
    if not artifact_uri:
        if not registry_uri:
            raise ConfigError(f"nothing to serve: pass --artifact-uri gs://..., or --registry-uri (or set "
                              f"{REGISTRY_URI_ENV}) to serve the registry's production version")
        version, artifact_uri = production_artifact_uri(registry_uri)
    config = VertexModelConfig(
        project=args.project, location=args.location, artifact_uri=artifact_uri, image=args.image,
        display_name=args.display_name, model_name=args.model_name, precision=args.precision,
        model_version=version, endpoint=args.endpoint or None, endpoint_display_name=args.endpoint_display_name,
        machine_type=args.machine_type, min_replica_count=args.min_replicas, max_replica_count=args.max_replicas,
        traffic_percentage=args.traffic_percentage, service_account=args.service_account or None,
    )
    if args.dry_run:
        return print_json({"model_upload": build_model_upload_request(config).kwargs(),
                           "endpoint": config.endpoint or {"create": config.endpoint_display_name},
                           "model_deploy": build_endpoint_deploy_request(config).kwargs()})
    return print_json(deploy_vertex_endpoint(config))


def cmd_sagemaker(args: argparse.Namespace) -> int:
    from textclf.deploy.sagemaker import SageMakerConfig, deploy_sagemaker

    registry_uri = registry_uri_from(args)
    if not args.bundle_dir and not registry_uri:
        raise ConfigError(f"nothing to deploy: pass --bundle-dir, or --registry-uri (or set {REGISTRY_URI_ENV}) to "
                          f"deploy the registry's production version")
    settings = dict(
        role_arn=args.role_arn, image=args.image, s3_prefix=args.s3_prefix, endpoint_name=args.endpoint_name,
        instance_type=args.instance_type, initial_instance_count=args.instance_count, region=args.region or None,
        endpoint_url=args.endpoint_url or None, model_name=args.model_name, precision=args.precision,
        wait=args.wait,
    )
    if args.bundle_dir:
        config = SageMakerConfig(**settings, model_version=args.model_version or None)
        return print_json(deploy_sagemaker(config, args.bundle_dir).to_dict())
    from textclf.deploy.kserve import production_artifact_uri
    from textclf.registry import ModelRegistry

    version, _ = production_artifact_uri(registry_uri)
    config = SageMakerConfig(**settings, model_version=version)  # checked before the download
    with tempfile.TemporaryDirectory(prefix="textclf-deploy-") as tmp:
        fetched = ModelRegistry(registry_uri).fetch(version, Path(tmp) / "fetched", parts=("onnx_model",))
        return print_json(deploy_sagemaker(config, fetched / "onnx_model").to_dict())


# --- parsers ----------------------------------------------------------------------------------------------------


def _add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    from textclf.pipelines.compile import DEFAULT_PIPELINE

    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                        help="which committed compiled pipeline to submit (training, training-gpu, ...)")
    parser.add_argument("--package", type=Path, default=None, help="a compiled pipeline YAML instead of --pipeline")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="pipeline parameter (repeat); typed from the pipeline's inputDefinitions")
    parser.add_argument("--service-account", default="", help="identity the pipeline's steps run as")
    parser.add_argument("--caching", choices=("default", "on", "off"), default="default",
                        help="override the compiled caching options")


def add_deploy_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``deploy`` with its targets (kserve, kubeflow, vertex-pipeline, vertex-model, sagemaker).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``deploy`` parser.
    """
    from textclf.deploy.kserve import DEFAULT_NAME, DEFAULT_PRECISION
    from textclf.deploy.kubeflow import DEFAULT_EXPERIMENT, KFP_HOST_ENV, KFP_TOKEN_ENV
    from textclf.deploy.sagemaker import DEFAULT_INSTANCE_TYPE, SAGEMAKER_ENDPOINT_URL_ENV
    from textclf.deploy.vertex import DEFAULT_LOCATION, DEFAULT_MACHINE_TYPE, DEFAULT_MODEL_NAME

    deploy = subparsers.add_parser("deploy", help="submit pipelines and serve models: KServe, Kubeflow, Vertex AI, "
                                                  "SageMaker")
    deploy.add_argument("--registry-uri", default="",
                        help=f"registry whose production version is served (default: ${REGISTRY_URI_ENV})")
    targets = deploy.add_subparsers(dest="deploy_target", required=True)
    precisions = ("int8", "fp32")

    kserve = targets.add_parser("kserve", help="render the KServe InferenceService (production version or a URI)")
    kserve.add_argument("--storage-uri", default="", help="export bundle to serve instead of the production version")
    kserve.add_argument("--model-version", default="", help="with --storage-uri: version recorded in the manifest")
    kserve.add_argument("--name", default=DEFAULT_NAME, help="InferenceService name")
    kserve.add_argument("--namespace", default="", help="namespace written into the manifest")
    kserve.add_argument("--canary-traffic-percent", type=int, default=None,
                        help="share (0-100) of traffic for the new revision (Serverless mode)")
    kserve.add_argument("--precision", choices=precisions, default=DEFAULT_PRECISION)
    kserve.add_argument("--image", default="", help="serving image overriding the ServingRuntime's")
    kserve.add_argument("--output", default="-", help="manifest file; '-' prints the YAML (default)")
    kserve.set_defaults(func=cmd_kserve)

    kubeflow = targets.add_parser("kubeflow", help="upload the compiled pipeline to Kubeflow Pipelines and run it")
    kubeflow.add_argument("--host", default="", help=f"KFP API endpoint, http(s)://... (default: ${KFP_HOST_ENV})")
    kubeflow.add_argument("--token", default="", help=f"bearer token (default: ${KFP_TOKEN_ENV}; none if unset)")
    kubeflow.add_argument("--namespace", default="", help="Kubeflow profile namespace (multi-user deployments)")
    kubeflow.add_argument("--pipeline-name", default="", help="pipeline name in KFP (default: the package's)")
    kubeflow.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    kubeflow.add_argument("--run-name", default="")
    kubeflow.add_argument("--pipeline-root", default="", help="artifact root of the run (default: the cluster's)")
    kubeflow.add_argument("--no-upload", action="store_true", help="only start the run; do not upload the pipeline")
    _add_pipeline_arguments(kubeflow)
    kubeflow.set_defaults(func=cmd_kubeflow)

    google_project = os.environ.get(GOOGLE_PROJECT_ENV, "")
    vertex = targets.add_parser("vertex-pipeline", help="run the compiled pipeline on Vertex AI Pipelines")
    vertex.add_argument("--project", default=google_project, help=f"project id (default: ${GOOGLE_PROJECT_ENV})")
    vertex.add_argument("--location", default=DEFAULT_LOCATION)
    vertex.add_argument("--pipeline-root", required=True, help="gs://bucket/prefix for the run's artifacts")
    vertex.add_argument("--display-name", default="")
    vertex.add_argument("--job-id", default="")
    vertex.add_argument("--network", default="", help="VPC to peer: projects/<number>/global/networks/<name>")
    vertex.add_argument("--dry-run", action="store_true", help="print the create request; send nothing")
    _add_pipeline_arguments(vertex)
    vertex.set_defaults(func=cmd_vertex_pipeline)

    model = targets.add_parser("vertex-model", help="upload the model to Vertex AI and deploy it to an endpoint")
    model.add_argument("--project", default=google_project, help=f"project id (default: ${GOOGLE_PROJECT_ENV})")
    model.add_argument("--location", default=DEFAULT_LOCATION)
    model.add_argument("--artifact-uri", default="", help="gs:// export bundle instead of the production version")
    model.add_argument("--model-version", default="", help="with --artifact-uri: version recorded on the model")
    model.add_argument("--image", required=True, help="serving image in Artifact Registry")
    model.add_argument("--display-name", default="textclf")
    model.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="name in /v1/models/<name>:predict")
    model.add_argument("--precision", choices=precisions, default=DEFAULT_PRECISION)
    model.add_argument("--endpoint", default="", help="existing endpoint id (default: create one)")
    model.add_argument("--endpoint-display-name", default="textclf")
    model.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE)
    model.add_argument("--min-replicas", type=int, default=1)
    model.add_argument("--max-replicas", type=int, default=2)
    model.add_argument("--traffic-percentage", type=int, default=100)
    model.add_argument("--service-account", default="", help="identity of the serving container")
    model.add_argument("--dry-run", action="store_true", help="print the upload and deploy requests; send nothing")
    model.set_defaults(func=cmd_vertex_model)

    sagemaker = targets.add_parser("sagemaker", help="package model.tar.gz to S3 and create a SageMaker endpoint")
    sagemaker.add_argument("--bundle-dir", type=Path, default=None,
                           help="export bundle instead of the production version")
    sagemaker.add_argument("--model-version", default="", help="with --bundle-dir: version recorded as a tag")
    sagemaker.add_argument("--role-arn", required=True, help="SageMaker execution role")
    sagemaker.add_argument("--image", required=True, help="serving image in ECR (the endpoint's region)")
    sagemaker.add_argument("--s3-prefix", required=True, help="s3://bucket/prefix for model.tar.gz")
    sagemaker.add_argument("--endpoint-name", default="textclf")
    sagemaker.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    sagemaker.add_argument("--instance-count", type=int, default=1)
    sagemaker.add_argument("--region", default="", help="default: the image's region")
    sagemaker.add_argument("--endpoint-url", default="",
                           help=f"SageMaker API endpoint override (default: ${SAGEMAKER_ENDPOINT_URL_ENV})")
    sagemaker.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    sagemaker.add_argument("--precision", choices=precisions, default=DEFAULT_PRECISION)
    sagemaker.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    sagemaker.set_defaults(func=cmd_sagemaker)
    return deploy
