"""bench-serve's parts that decide its verdict: the machine description, the served-accuracy pass, the no-op server
(the HTTP ceiling) and the summary of the student / cascade candidates against the targets."""

from __future__ import annotations

import pytest

from conftest import read_ag_news, requires_ag_news
from test_serving import running_server
from textclf.benchmarks.machine import SPEED_FLAGS, cpu_description, machine_info
from textclf.benchmarks.serve_bench import measure_served_accuracy, summarise

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_fp16

processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_fp16
"""


def test_cpu_description_names_the_model_and_every_speed_flag():
    cpu = cpu_description(CPUINFO)
    assert cpu["model"] == "Example CPU 9000"
    assert set(SPEED_FLAGS) <= set(cpu["flags"]) and "amx_fp16" in cpu["flags"]
    assert cpu["flags"]["avx512_vnni"] and cpu["flags"]["amx_tile"] and not cpu["flags"]["avx512_bf16"]
    machine = machine_info()
    from pathlib import Path

    assert machine["cpus"] >= 1
    assert machine["cpu"] == cpu_description(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))


def run(rps: float, p50: float, errors: int = 0) -> dict:
    return {"throughput_rps": rps, "errors": errors, "latency_ms": {"p50": p50, "p95": p50, "p99": p50}}


def test_summary_measures_candidates_against_the_int8_server_and_the_baseline_of_the_same_run():
    servers = {
        "noop": {"1": run(900, 1.0), "8": run(1500, 5.0), "32": run(1600, 20.0)},
        "onnx-int8": {"1": run(150, 6.5), "8": run(230, 30.0), "32": run(250, 120.0)},
        "hf-pytorch-fp32": {"1": run(45, 22.0), "8": run(48, 160.0), "32": run(50, 640.0)},
        "student-int8": {"1": run(260, 3.8), "8": run(420, 18.0), "32": run(460, 70.0)},
        "cascade-tfidf": {"1": run(400, 2.4), "8": run(600, 12.0), "32": run(700, 45.0)},
    }
    accuracy = {"onnx-int8": {"accuracy": 0.9400, "errors": 0}, "student-int8": {"accuracy": 0.9385, "errors": 0},
                "cascade-tfidf": {"accuracy": 0.9350, "errors": 0}}
    model_alone = {"onnx-int8": {"batch32_texts_per_s": 280.0}, "student-int8": {"batch32_texts_per_s": 500.0}}
    summary = summarise(servers, model_alone, accuracy, ("student-int8", "cascade-tfidf"))
    student, cascade = summary["candidates"]["student-int8"], summary["candidates"]["cascade-tfidf"]
    assert student["speedup_over_int8_at_c32"] == pytest.approx(1.84)
    assert student["speedup_over_baseline_at_c32"] == pytest.approx(9.2)
    assert student["accuracy_drop_vs_int8"] == pytest.approx(0.0015)
    assert student["share_of_model_alone_batch32_at_c32"] == pytest.approx(0.92)
    assert all(student["targets"].values()), student["targets"]
    assert not cascade["targets"]["accuracy_within_0.3_points"] and cascade["targets"]["throughput_ge_300_rps"]
    # the faster cascade loses 0.5 points: the best candidate is the fastest one that keeps the accuracy
    assert summary["best"] == {"server": "student-int8", "keeps_accuracy": True, "all_targets_met": True}
    assert summary["http_ceiling_rps_at_c32"] == 1600
    assert summary["share_of_http_ceiling_at_c32"]["onnx-int8"] == pytest.approx(250 / 1600)


def test_summary_without_candidates_keeps_the_int8_verdict():
    servers = {"onnx-int8": {"1": run(100, 9.0), "8": run(120, 60.0), "32": run(130, 240.0)},
               "hf-pytorch-fp32": {"1": run(40, 25.0), "8": run(40, 200.0), "32": run(40, 800.0, errors=1)}}
    summary = summarise(servers, {"onnx-int8": {"batch32_texts_per_s": 260.0}})
    assert "candidates" not in summary and summary["targets"]["zero_errors"] is False


def test_server_specs_are_server_command_lines_the_server_parses_back(tmp_path):
    """Every one of our servers is started from ServingConfig.to_args, with the port left for running_server."""
    from textclf.benchmarks.serve_bench import PORT, BenchModels, server_specs
    from textclf.serving.__main__ import build_parser, parse_command_line

    models = BenchModels(tmp_path / "model", tmp_path / "onnx", tmp_path / "student", (tmp_path / "cascade",))
    specs = {spec.name: spec for spec in server_specs(models)}
    assert list(specs) == ["noop", "onnx-int8", "onnx-fp32", "hf-pytorch-fp32", "student-int8", "cascade-cascade"]
    assert [name for name, spec in specs.items() if spec.candidate] == ["student-int8", "cascade-cascade"]
    for name, spec in specs.items():
        assert spec.command.count(PORT) + sum(arg.endswith(f"={PORT}") for arg in spec.command) == 1, name
        if name == "hf-pytorch-fp32":
            continue
        config, _ = parse_command_line(build_parser(), [arg.replace(PORT, "1234") for arg in spec.command[3:]])
        served = {"noop": "onnx", "onnx-int8": "onnx", "onnx-fp32": "onnx", "student-int8": "student",
                  "cascade-cascade": "cascade"}[name]
        assert (config.model_dir, config.model_name, config.http_port, config.enable_grpc) == (
            str(tmp_path / served), "textclf", 1234, False), name
        assert config.precision.value == ("fp32" if name == "onnx-fp32" else "int8"), name


@pytest.mark.slow
@requires_ag_news
def test_noop_server_answers_through_our_server_and_served_accuracy_counts_every_text(exported_tiny_model,
                                                                                      tmp_path):
    frame = read_ag_news("test").iloc[:40]
    texts = (frame["title"] + " " + frame["description"]).tolist()
    names = ("World", "Sports", "Business", "Sci/Tech")
    labels = [names[int(label) - 1] for label in frame["label"]]
    with running_server(exported_tiny_model, tmp_path, module="textclf.benchmarks.noop_server") as server:
        url = f"{server.http}/v1/models/textclf:predict"
        noop = measure_served_accuracy(url, texts, labels, concurrency=4)
        import httpx

        body = httpx.post(url, json={"instances": ["a", "b"]}, timeout=10).json()
        bad = httpx.post(url, json={"instances": []}, timeout=10)
    assert body["model_version"] == "noop" and [p["label"] for p in body["predictions"]] == ["World", "World"]
    assert body["predictions"][0]["scores"] == {name: 0.25 for name in names}
    assert bad.status_code == 400, "the no-op server validates requests as ours does"
    # uniform answers: argmax is the first class, so the accuracy is that class's share of the texts
    assert noop == {"texts": 40, "accuracy": labels.count("World") / 40, "errors": 0}
