"""Deployment to Amazon SageMaker, offline: the archive is uploaded and the model, endpoint config and endpoint are
created on moto's server (tests/deploy_fakes.py) with IAM authentication on, as a user holding exactly
:data:`REQUIRED_IAM_ACTIONS`."""

import hashlib
import io
import json
import os
import tarfile
from typing import Any

import boto3
import pytest
from deploy_fakes import aws, aws_env, bucket, bundle, registry  # noqa: F401  (pytest fixtures)
from deploy_fakes import make_bundle, run_cli
from storage_servers import FAST_RETRY, S3_REGION

from textclf.deploy.sagemaker import (
    SERVING_ARGS_ENV,
    SageMakerConfig,
    build_sagemaker_requests,
    deploy_sagemaker,
    package_model_tar,
)
from textclf.errors import ConfigError, StorageAuthError, TextclfError
from textclf.storage import S3Config, Store

ROLE_ARN = "arn:aws:iam::123456789012:role/service-role/textclf-sagemaker-execution"
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/textclf-serving:0.1.0"


# --- SageMaker --------------------------------------------------------------------------------------------------


def sagemaker_config(bucket: str, **changes: Any) -> SageMakerConfig:
    settings = dict(role_arn=ROLE_ARN, image=ECR_IMAGE, s3_prefix=f"s3://{bucket}/sagemaker", region=S3_REGION,
                    model_version="v0.1.0")
    settings.update(changes)
    return SageMakerConfig(**settings)


def test_model_archive_has_the_files_at_its_root_and_is_deterministic(bundle, tmp_path):
    first = package_model_tar(bundle, tmp_path / "a" / "model.tar.gz")
    for path in bundle.iterdir():
        os.utime(path, (1e9, 1e9))
    second = package_model_tar(bundle, tmp_path / "b" / "model.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(p.name for p in bundle.iterdir())
        assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
        assert tar.extractfile("model.onnx").read() == (bundle / "model.onnx").read_bytes()


def test_model_archive_bad_input(bundle, tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        package_model_tar(tmp_path / "missing", tmp_path / "model.tar.gz")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.int8.onnx", "tokenizer.json", "labels.json", "export_metadata.json"):
        (partial / name).write_bytes((bundle / name).read_bytes())
    with pytest.raises(ConfigError, match="not a complete export bundle: missing model.onnx"):
        package_model_tar(partial, tmp_path / "model.tar.gz")
    with pytest.raises(ConfigError, match="inside the bundle"):
        package_model_tar(bundle, bundle / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists() and not (bundle / "model.tar.gz").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(role_arn="textclf-sagemaker-execution"), "IAM role ARN"),
        (dict(role_arn="arn:aws:iam::1234:role/x"), "IAM role ARN"),
        (dict(role_arn="arn:aws:iam::123456789012:user/deployer"), "IAM role ARN"),
        (dict(image="ghcr.io/textclf-pipelines/serving:0.1.0"), "pulls serving images from ECR"),
        (dict(region="eu-west-1"), "image is in us-east-1 but the endpoint in eu-west-1"),
        (dict(s3_prefix="gs://bucket/models"), "destination must be s3://bucket"),
        (dict(s3_prefix="/tmp/models"), "destination must be s3://bucket"),
        (dict(endpoint_name="textclf_prod"), "endpoint_name"),
        (dict(instance_type="m5.large"), "instance type"),
        (dict(initial_instance_count=0), "initial_instance_count"),
        (dict(precision="int4"), "precision must be one of"),
    ],
)
def test_sagemaker_bad_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        sagemaker_config("bucket", **changes)


def test_sagemaker_requests(bucket):
    config = sagemaker_config(bucket, environment={"OMP_NUM_THREADS": "2"})
    requests = build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/abc/model.tar.gz")
    container = requests.create_model["PrimaryContainer"]
    assert container == {
        "Image": ECR_IMAGE, "Mode": "SingleModel", "ModelDataUrl": f"s3://{bucket}/sagemaker/abc/model.tar.gz",
        "Environment": {SERVING_ARGS_ENV: "--model-name=textclf --model-dir=/opt/ml/model --precision=int8 "
                                          "--http-port=8080 --no-grpc", "OMP_NUM_THREADS": "2"}}
    assert requests.create_model["ExecutionRoleArn"] == ROLE_ARN
    assert requests.create_endpoint_config["ProductionVariants"] == [{
        "VariantName": "AllTraffic", "ModelName": requests.model_name, "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}]
    assert requests.create_endpoint["EndpointConfigName"] == requests.endpoint_config_name
    assert requests.create_model["Tags"] == [{"Key": "textclf-pipelines/model-version", "Value": "v0.1.0"}]
    assert build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/abc/model.tar.gz") == requests
    other = build_sagemaker_requests(sagemaker_config(bucket, environment={"OMP_NUM_THREADS": "2"},
                                                      instance_type="ml.c5.xlarge"),
                                     f"s3://{bucket}/sagemaker/abc/model.tar.gz")
    assert other.model_name == requests.model_name and other.endpoint_config_name != requests.endpoint_config_name


def test_sagemaker_deploy_on_moto(aws, bucket, bundle, tmp_path):
    """Package, upload and create model, endpoint config and endpoint as the deployer (exactly the documented IAM
    actions, enforced by moto)."""
    client = aws.sagemaker("deployer")
    config = sagemaker_config(bucket, endpoint_name="textclf-moto", instance_type="ml.c5.xlarge",
                              initial_instance_count=2, wait=True)
    deployment = deploy_sagemaker(config, bundle, storage_config=aws.s3_config("deployer"), client=client)
    assert (deployment.action, deployment.endpoint_status) == ("created", "InService")

    endpoint = client.describe_endpoint(EndpointName="textclf-moto")
    assert endpoint["EndpointConfigName"] == deployment.endpoint_config_name
    endpoint_config = client.describe_endpoint_config(EndpointConfigName=deployment.endpoint_config_name)
    (variant,) = endpoint_config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        deployment.model_name, "ml.c5.xlarge", 2)
    model = client.describe_model(ModelName=deployment.model_name)
    assert model["ExecutionRoleArn"] == ROLE_ARN
    assert model["PrimaryContainer"]["Image"] == ECR_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == deployment.model_data_url
    assert model["PrimaryContainer"]["Environment"][SERVING_ARGS_ENV].startswith("--model-name=textclf ")

    # The object SageMaker will unpack into /opt/ml/model is byte-for-byte the local archive.
    local = package_model_tar(bundle, tmp_path / "model.tar.gz")
    prefix, name = deployment.model_data_url.rsplit("/", 1)
    uploaded = Store(prefix, config=aws.s3_config("admin")).read_bytes(name)
    assert uploaded == local.read_bytes()
    assert deployment.model_data_url.endswith(f"/{hashlib.sha256(uploaded).hexdigest()[:16]}/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(uploaded)) as tar:
        assert "model.onnx" in tar.getnames() and "tokenizer.json" in tar.getnames()


def test_sagemaker_failure_rolls_back(aws, bucket, tmp_path):
    """CreateEndpoint is denied: the model, endpoint config and archive created before it are deleted again."""
    bundle = make_bundle(tmp_path / "other")  # different random ONNX bytes: a new archive and model
    client = aws.sagemaker("no-create-endpoint")
    config = sagemaker_config(bucket, endpoint_name="textclf-denied")
    with pytest.raises(TextclfError, match=r"(?s)not authorized to perform: sagemaker:CreateEndpoint.*deleted again: "
                                           r"model textclf-denied-\w+, endpoint_config textclf-denied-\w+, "
                                           r"the uploaded archive"):
        deploy_sagemaker(config, bundle, storage_config=aws.s3_config("no-create-endpoint"), client=client)
    admin = aws.sagemaker("admin")
    assert not [m for m in boto3_list(admin, "models") if m.startswith("textclf-denied")]
    assert not [c for c in boto3_list(admin, "endpoint_configs") if c.startswith("textclf-denied")]
    digest = hashlib.sha256(package_model_tar(bundle, tmp_path / "model.tar.gz").read_bytes()).hexdigest()
    assert not Store(f"s3://{bucket}/sagemaker", config=aws.s3_config("admin")).exists(f"{digest[:16]}/model.tar.gz")


def boto3_list(client: Any, kind: str) -> list[str]:
    """Names of every SageMaker model or endpoint config (the admin's client: the deployer may not list)."""
    if kind == "models":
        return [m["ModelName"] for m in client.list_models()["Models"]]
    return [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]]


def test_sagemaker_updates_an_existing_endpoint(aws, bucket, bundle, tmp_path):
    """An existing endpoint is switched to the new configuration with UpdateEndpoint (moto has no UpdateEndpoint:
    the SageMaker calls are checked with botocore's Stubber, offline; the archive still goes to moto's S3)."""
    from botocore.stub import Stubber

    client = boto3.client("sagemaker", region_name=S3_REGION, aws_access_key_id="x", aws_secret_access_key="y")
    config = sagemaker_config(bucket, endpoint_name="textclf-live", precision="fp32")
    digest = hashlib.sha256(package_model_tar(bundle, tmp_path / "model.tar.gz").read_bytes()).hexdigest()
    expected = build_sagemaker_requests(config, f"s3://{bucket}/sagemaker/{digest[:16]}/model.tar.gz")
    live = {"EndpointName": "textclf-live"}
    with Stubber(client) as stub:
        stub.add_response("describe_model", {"ModelName": expected.model_name, "CreationTime": 0,
                                             "ModelArn": f"arn:aws:sagemaker:us-east-1:1:model/{expected.model_name}"},
                          {"ModelName": expected.model_name})
        stub.add_client_error("describe_endpoint_config", "ValidationException",
                              'Could not find endpoint configuration "arn:..."',
                              expected_params={"EndpointConfigName": expected.endpoint_config_name})
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/x"},
                          expected.create_endpoint_config)
        stub.add_response("describe_endpoint", endpoint_description("InService"), live)
        stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/textclf-live"},
                          {**live, "EndpointConfigName": expected.endpoint_config_name})
        stub.add_response("describe_endpoint", endpoint_description("Updating"), live)
        deployment = deploy_sagemaker(config, bundle, storage_config=aws.s3_config("deployer"), client=client)
        stub.assert_no_pending_responses()
    assert (deployment.action, deployment.endpoint_status) == ("updated", "Updating")
    assert deployment.endpoint_config_name == expected.endpoint_config_name
    assert "--precision=fp32" in expected.create_model["PrimaryContainer"]["Environment"][SERVING_ARGS_ENV]


def endpoint_description(status: str) -> dict[str, Any]:
    return {"EndpointName": "textclf-live", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/textclf-live",
            "EndpointConfigName": "old", "EndpointStatus": status, "CreationTime": 0, "LastModifiedTime": 0}


def test_sagemaker_bad_credentials_and_bundle(aws, bucket, bundle, tmp_path):
    client = aws.sagemaker("deployer")
    bad = S3Config(endpoint=aws.url.removeprefix("http://"), secure=False, region=S3_REGION,
                   access_key=aws.keys["deployer"][0], secret_key="wrong", retry=FAST_RETRY)
    with pytest.raises(StorageAuthError):  # refused by S3 before any SageMaker call
        deploy_sagemaker(sagemaker_config(bucket, endpoint_name="textclf-badkey"), bundle, storage_config=bad,
                         client=client)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a complete export bundle: missing .*model.onnx"):
        deploy_sagemaker(sagemaker_config(bucket, endpoint_name="textclf-empty"), empty,
                         storage_config=aws.s3_config("deployer"), client=client)
    assert not [m for m in boto3_list(aws.sagemaker("admin"), "models")
                if m.startswith(("textclf-badkey", "textclf-empty"))]


def test_sagemaker_cli_deploys_the_production_version(registry, aws_env, bucket, capsys):
    argv = ["deploy", "--registry-uri", str(registry.store.root), "sagemaker", "--role-arn", ROLE_ARN,
            "--image", ECR_IMAGE, "--s3-prefix", f"s3://{bucket}/cli", "--endpoint-name", "textclf-cli", "--wait"]
    assert run_cli(argv) == 0
    deployment = json.loads(capsys.readouterr().out)
    assert deployment["action"] == "created" and deployment["endpoint_status"] == "InService"
    model = aws_env.sagemaker("deployer").describe_model(ModelName=deployment["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{bucket}/cli/")
    tags = aws_env.sagemaker("admin").list_tags(ResourceArn=model["ModelArn"])["Tags"]
    assert {"Key": "textclf-pipelines/model-version", "Value": "v0.1.0"} in tags

    assert run_cli(["deploy", "sagemaker", "--role-arn", "admin", "--image", ECR_IMAGE, "--s3-prefix",
                    f"s3://{bucket}/cli", "--bundle-dir", "/nonexistent"]) == 2
    assert "role_arn must be an IAM role ARN" in capsys.readouterr().err
