"""Hostile input against a real model server (``python -m textclf.serving`` on 127.0.0.1 with a tiny exported
model), through :mod:`textclf.benchmarks.fuzz`: schemathesis over every operation of the server's own OpenAPI
document, hypothesis bodies for V1 predict and V2 infer. No answer may be a 5xx (other than KServe's deliberate 501 to a
``model_version``), every request gets an answer, and the server still serves afterwards: the fuzzer's cases name the
served model too, so they include unloading it (refused, see ``NoModelControl``).

The example counts here are bounded for CI time; ``make bench-reliability`` sends >= 1,000 per endpoint."""

import httpx
import pytest

from test_serving import running_server
from textclf.benchmarks.fuzz import fuzz_server

pytestmark = pytest.mark.slow

#: Cases per OpenAPI operation and generation mode, and bodies per predict/infer route, in the test suite.
EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed(exported_tiny_model, tmp_path_factory):
    with running_server(exported_tiny_model, tmp_path_factory.mktemp("fuzz")) as server:
        results = fuzz_server(server.http, "textclf", EXAMPLES)
        yield server, results


def test_the_openapi_document_lists_the_inference_routes(fuzzed):
    _, results = fuzzed
    assert {"POST /v1/models/{model_name}:predict", "POST /v2/models/{model_name}/infer",
            "GET /v2/health/ready"} <= set(results)


def test_no_endpoint_answers_5xx_or_drops_a_request(fuzzed):
    _, results = fuzzed
    bad = {name: result for name, result in results.items()
           if result["responses_5xx"] or result["transport_errors"]}
    assert bad == {}
    predict = results["POST /v1/models/textclf:predict (hypothesis)"]
    assert predict["requests"] == EXAMPLES and set(predict["statuses"]) <= {"200", "400", "413"}
    # KServe's V1 routes read the raw request, so the OpenAPI document declares no body and any name is a valid path
    # parameter: schemathesis has no negative case there (the hypothesis bodies above are V1's hostile input).
    # Some of its cases named the served model and reached its validation (a 400, no body).
    openapi_predict = results["POST /v1/models/{model_name}:predict"]
    assert openapi_predict["modes_without_cases"] == ["negative"] and openapi_predict["statuses"].get("400")
    # V2 infer declares its body: both modes ran.
    assert results["POST /v2/models/{model_name}/infer"]["requests"] == 2 * EXAMPLES
    # Model control is off: every load and unload is refused with 400, whatever the name.
    for action in ("load", "unload"):
        assert set(results[f"POST /v2/repository/models/{{model_name}}/{action}"]["statuses"]) == {"400"}


def test_the_server_still_serves_after_the_fuzzing(fuzzed):
    server, _ = fuzzed
    assert server.process.poll() is None
    assert httpx.get(f"{server.http}/v2/health/ready", timeout=10).status_code == 200
    answer = httpx.post(f"{server.http}/v1/models/textclf:predict", json={"instances": ["Stocks fell on Monday"]},
                        timeout=30)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"]
