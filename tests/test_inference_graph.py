"""The cascade as a KServe InferenceGraph (``manifests/overlays/cascade-graph``), checked without a cluster.

What KServe's router does with the graph is taken from its source (``kserve/kserve``, ``cmd/router/main.go``,
``routeStep``'s ``Sequence`` branch): it runs the steps in order; a step's body is the graph's original request
unless ``data: $response``; before a step with a ``condition`` it requires the previous step's response to be valid
JSON (else 500) and, when ``gjson.GetBytes(previous response, condition).Exists()`` is false, stops and answers that
response with 200; a ``Hard`` step that answers non-2xx ends the sequence with its own answer and status. The
controller (``pkg/controller/v1alpha1/inferencegraph/controller.go``) turns a step's ``serviceName`` into
``GetPredictorEndpoint`` (``pkg/controller/v1beta1/inferenceservice/utils/utils.go``): the InferenceService's address
plus ``/v1/models/<name>:predict`` when v1 is the first of its ServingRuntime's ``protocolVersions`` that a graph
speaks. :func:`run_sequence` is that branch in Python, and :func:`gjson_exists` is GJSON v1.18.0 (the router's
``github.com/tidwall/gjson``) for the only path shape used here, ``key.#(key==value)``; both are small enough to
read against the Go source, and the shape is checked so that a condition outside it fails instead of being guessed.
The evaluator agreed with the real gjson v1.18.0, compiled from its source, on 126 path/body pairs (7 paths of this
shape, 18 bodies: the ones below, strings, numbers, null, nested values, whitespace). Objects with duplicate keys
are out of scope. That comparison is not part of the suite because the suite's machines have no Go.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from test_manifests import MANIFESTS, crd_errors, render, requires_crds

OVERLAY = MANIFESTS / "overlays" / "cascade-graph"
STAGES = {"textclf-stage1": 1, "textclf-stage2": 2}
#: The condition of the stage-2 step: "stage 1's response has a prediction with defer == true".
DEFER_CONDITION = "predictions.#(defer==true)"


# --- GJSON and the router, for what the graph uses ---------------------------------------------------------------

_MISSING = object()
#: ``key.#(key)``, ``key.#(key==value)``, ``key.#(key!=value)``: a first-match query on an array member.
_QUERY = re.compile(r"^(?P<array>[A-Za-z_][A-Za-z0-9_]*)\.#\((?P<key>[A-Za-z_][A-Za-z0-9_]*)"
                    r"(?:\s*(?P<op>==|!=)\s*(?P<value>\"(?:[^\"\\]|\\.)*\"|[^)\s~\"][^)\s]*))?\)$")


def _query_matches(op: str | None, wanted: str, value: Any) -> bool:
    """gjson.go ``queryMatches`` for ``=`` and ``!=``: compares by the JSON type of ``value``; a number against an
    unparsable value compares with 0 (``strconv.ParseFloat``'s result on error); null, objects and arrays never
    match a comparison."""
    if value is _MISSING:
        return False
    if op is None:
        return True
    equal = op == "=="
    if isinstance(value, bool):  # before int: JSON true/false are gjson's True/False types
        return (wanted == ("true" if value else "false")) is equal
    if isinstance(value, str):
        return (value == wanted) is equal
    if isinstance(value, (int, float)):
        try:
            number = float(wanted)
        except ValueError:
            number = 0.0
        return (value == number) is equal
    return False


def gjson_exists(body: bytes, path: str) -> bool:
    """``gjson.GetBytes(body, path).Exists()`` for a ``key.#(key op value)`` path (the first element of the array
    ``key`` whose member matches; nothing when none does or ``key`` is not an array)."""
    match = _QUERY.match(path)
    if match is None:
        raise ValueError(f"{path!r}: not a key.#(key op value) query, which is all this evaluator reproduces")
    wanted = match["value"] or ""
    if wanted.startswith('"'):
        wanted = json.loads(wanted)
    try:  # objects with duplicate keys are out of scope (the server's encoder writes none)
        document = json.loads(body)
    except ValueError:
        return False
    array = document.get(match["array"], _MISSING) if isinstance(document, dict) else _MISSING
    if not isinstance(array, list):
        return False
    for element in array:
        # Elements that are not objects have no member: a query with a path never matches them (parseArray).
        member = element.get(match["key"], _MISSING) if isinstance(element, dict) else _MISSING
        if _query_matches(match["op"], wanted, member):
            return True
    return False


@dataclasses.dataclass
class Answer:
    body: bytes
    status: int


def run_sequence(node: dict[str, Any], request: bytes, call: Callable[[str, bytes], Answer]) -> Answer:
    """cmd/router/main.go ``routeStep`` for a ``Sequence`` node whose steps name services (no nested nodes, no
    ``mapPredictionsToInstances``)."""
    assert node["routerType"] == "Sequence"
    response: bytes | None = None
    status = 0
    for i, step in enumerate(node["steps"]):
        body = response if step.get("data") == "$response" and i > 0 else request
        if step.get("condition"):
            try:
                json.loads(response or b"")
            except ValueError:  # gjson.ValidBytes fails, also for the first step, which has no previous response
                return Answer(b"invalid response", 500)
            if not gjson_exists(response, step["condition"]):
                return Answer(response, 200)  # an unmet condition ends the sequence with the previous response
        answer = call(step["serviceName"], body)
        response, status = answer.body, answer.status
        if step.get("dependency") == "Hard" and not 200 <= status <= 299:
            return Answer(response, status)
    return Answer(response, status)


# --- the overlay ------------------------------------------------------------------------------------------------


def _resources() -> list[dict[str, Any]]:
    return render(OVERLAY)


def _graph() -> dict[str, Any]:
    (graph,) = [r for r in _resources() if r["kind"] == "InferenceGraph"]
    return graph


def _stages() -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in _resources() if r["kind"] == "InferenceService"}


def _prediction(label: str, stage: int, defer: bool) -> dict[str, Any]:
    return {"label": label, "label_id": 0, "scores": {label: 0.9}, "stage": stage, "defer": defer}


def _v1_response(*predictions: dict[str, Any]) -> bytes:
    return json.dumps({"predictions": list(predictions), "model_version": "v1"}).encode()


CONFIDENT = _v1_response(_prediction("World", 1, False), _prediction("Sports", 1, False))
DEFERRED = _v1_response(_prediction("World", 1, False), _prediction("Sports", 1, True))


@requires_crds
def test_every_resource_matches_its_crd():
    resources = _resources()
    assert {r["kind"] for r in resources} >= {"InferenceGraph", "InferenceService", "ServingRuntime"}
    for resource in resources:
        if resource["kind"] in ("InferenceGraph", "InferenceService", "ServingRuntime"):
            assert crd_errors(resource) == [], f"{resource['kind']} {resource['metadata']['name']}"


@requires_crds
def test_crd_validation_catches_a_broken_graph():
    graph = _graph()
    graph["spec"]["nodes"]["root"]["routerType"] = "Cascade"
    graph["spec"]["nodes"]["root"]["steps"][1]["service"] = "textclf-stage2"  # the field is serviceName
    errors = crd_errors(graph)
    assert any("'Cascade' is not one of" in e for e in errors), errors
    assert any("'service' was unexpected" in e for e in errors), errors


def test_two_stage_services_share_the_bundle_and_runtime_and_differ_only_in_the_stage_arg():
    stages = _stages()
    assert set(stages) == set(STAGES)
    models = {name: isvc["spec"]["predictor"]["model"] for name, isvc in stages.items()}
    for name, stage in STAGES.items():
        assert models[name]["args"] == [f"--cascade-stage={stage}"], name
        assert models[name]["runtime"] == "textclf-onnx", name
        assert models[name]["modelFormat"]["name"] == "onnx", name
    assert models["textclf-stage1"]["storageUri"] == models["textclf-stage2"]["storageUri"]
    assert models["textclf-stage1"]["storageUri"].startswith("s3://textclf-models/")


def test_graph_sends_every_request_to_stage1_then_deferred_ones_to_stage2():
    graph = _graph()
    assert graph["metadata"]["name"] == "textclf-cascade"
    assert set(graph["spec"]["nodes"]) == {"root"}  # the router starts at "root" (v1alpha1.GraphRootNodeName)
    first, second = graph["spec"]["nodes"]["root"]["steps"]
    assert graph["spec"]["nodes"]["root"]["routerType"] == "Sequence"
    assert (first["serviceName"], second["serviceName"]) == ("textclf-stage1", "textclf-stage2")
    assert "condition" not in first  # a condition on the first step has no previous response: the router answers 500
    assert second["condition"] == DEFER_CONDITION
    assert second.get("data") != "$response"  # stage 2 gets the original request, not stage 1's answer
    assert first["dependency"] == "Hard"  # a failing stage 1 must not come back as a 200 (see the test below)
    for step in (first, second):
        assert {"nodeName", "serviceUrl"}.isdisjoint(step), "exactly one target per step (the KServe webhook)"


def test_graph_steps_name_the_overlays_inference_services_on_a_v1_runtime():
    """The controller resolves each serviceName in the graph's namespace (the same one, with apply -k) and calls the
    V1 predict route because v1 comes first in textclf-onnx's protocolVersions."""
    named = {step["serviceName"] for node in _graph()["spec"]["nodes"].values() for step in node["steps"]}
    assert named == set(_stages())
    (runtime,) = [r for r in _resources() if r["kind"] == "ServingRuntime"]
    assert runtime["metadata"]["name"] == "textclf-onnx"
    assert next(p for p in runtime["spec"]["protocolVersions"] if p in ("v1", "v2")) == "v1"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (DEFERRED, True),
        (_v1_response(_prediction("Sports", 1, True)), True),
        (CONFIDENT, False),
        (_v1_response(), False),
        (b'{"error": "model textclf-stage1 is not ready"}', False),
        (b'{"predictions": {"defer": true}}', False),  # not an array
        (b'{"predictions": [true, "defer"]}', False),  # elements without members
        (b'{"predictions": [{"defer": null}, {"defer": "false"}, {"label": "World"}]}', False),
    ],
    ids=["one-of-two-deferred", "deferred", "confident", "no-predictions", "error-body", "object", "scalars",
         "null-string-missing"],
)
def test_condition_matches_a_deferred_stage1_response_only(body, expected):
    assert gjson_exists(body, _graph()["spec"]["nodes"]["root"]["steps"][1]["condition"]) is expected


def test_condition_matches_the_servers_own_stage1_responses():
    """The body stage 1 answers (``textclf.serving.codec.v1_response`` with ``deferred``, JSON-encoded as KServe
    does) matches exactly when one of its texts is deferred: ``defer`` is a JSON boolean, not a string or 0/1."""
    import numpy as np
    from textclf.serving.codec import v1_response

    condition = _graph()["spec"]["nodes"]["root"]["steps"][1]["condition"]
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45]], dtype=np.float32)
    for deferred, expected in (([False, True], True), ([True, True], True), ([False, False], False)):
        body = v1_response(probabilities, ("World", "Sports"), "v1", np.ones(2, dtype=np.int64), np.array(deferred))
        assert [p["defer"] for p in body["predictions"]] == deferred
        assert gjson_exists(json.dumps(body).encode(), condition) is expected, deferred
    stage2 = v1_response(probabilities, ("World", "Sports"), "v1", np.full(2, 2, dtype=np.int64))
    assert gjson_exists(json.dumps(stage2).encode(), condition) is False  # stage 2 answers carry no defer


def test_gjson_evaluator_refuses_paths_it_does_not_reproduce():
    # predictions.#(defer==true)# would be GJSON's "all matches": [] when none matches, which Exists(), so every
    # request would go to stage 2. The evaluator refuses it rather than answering for it.
    for path in ("predictions.#(defer==true)#", "predictions.0.defer", "predictions.#(defer==~true)"):
        with pytest.raises(ValueError):
            gjson_exists(DEFERRED, path)


def _services(stage1: Answer, stage2: Answer, calls: list[tuple[str, bytes]]) -> Callable[[str, bytes], Answer]:
    def call(service: str, body: bytes) -> Answer:
        calls.append((service, body))
        return {"textclf-stage1": stage1, "textclf-stage2": stage2}[service]

    return call


REQUEST = json.dumps({"instances": ["Stocks fell sharply on Wall Street", "The team won the cup final"]}).encode()
STAGE2 = Answer(_v1_response(_prediction("Business", 2, False), _prediction("Sports", 2, False)), 200)


@pytest.mark.parametrize(
    ("stage1", "expected", "services"),
    [
        (Answer(CONFIDENT, 200), Answer(CONFIDENT, 200), ["textclf-stage1"]),
        (Answer(DEFERRED, 200), STAGE2, ["textclf-stage1", "textclf-stage2"]),
        (Answer(b'{"error": "boom"}', 500), Answer(b'{"error": "boom"}', 500), ["textclf-stage1"]),
    ],
    ids=["confident-stage1-answers", "deferred-stage2-answers", "stage1-error-keeps-its-status"],
)
def test_router_answers_stage1_or_stage2_for_the_original_request(stage1, expected, services):
    calls: list[tuple[str, bytes]] = []
    answer = run_sequence(_graph()["spec"]["nodes"]["root"], REQUEST, _services(stage1, STAGE2, calls))
    assert answer == expected
    assert [service for service, _ in calls] == services
    assert all(body == REQUEST for _, body in calls)  # both stages get the graph's original request


def test_a_soft_stage1_would_turn_its_errors_into_200():
    """Why stage1 is Hard: with the default (Soft), an error body matches no deferred prediction and the router
    returns it with 200."""
    node = json.loads(json.dumps(_graph()["spec"]["nodes"]["root"]))
    del node["steps"][0]["dependency"]
    failing = Answer(b'{"error": "boom"}', 503)
    assert run_sequence(node, REQUEST, _services(failing, STAGE2, [])) == Answer(b'{"error": "boom"}', 200)


def test_stage_args_are_the_servers_cascade_flag():
    """With the runtime's args, each stage's args parse as ``python -m textclf.serving`` flags naming its stage."""
    from textclf.serving.config import SERVER_FLAGS

    if "cascade_stage" not in SERVER_FLAGS:
        pytest.skip("the server has no --cascade-stage flag yet (ServingConfig.cascade_stage)")
    from textclf.serving.__main__ import config_from_args

    assert SERVER_FLAGS["cascade_stage"] == "--cascade-stage"
    (runtime,) = [r for r in _resources() if r["kind"] == "ServingRuntime"]
    runtime_args = [arg.replace("{{.Name}}", "textclf") for arg in runtime["spec"]["containers"][0]["args"]]
    for name, isvc in _stages().items():
        config = config_from_args([*runtime_args, *isvc["spec"]["predictor"]["model"]["args"]])
        assert int(config.cascade_stage) == STAGES[name], name
