"""``make bench-reliability`` on the tiny exported model, shortened for CI: a 30-second soak with 4 clients in 10-second
"minutes", every fault case in full, and a bounded fuzz run. The fault cases are correctness checks (nothing lost,
nothing half-written, the service answering again) and are asserted here; the soak's speed and memory targets are
the benchmark's to measure (runs/bench/bench_reliability.json), so only its bookkeeping is checked."""

import pytest

from textclf.benchmarks.reliability_bench import PARTS, main, run_reliability_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tiny_model, exported_tiny_model, small_splits, tmp_path_factory):
    work = tmp_path_factory.mktemp("reliability")
    output = work / "bench_reliability.json"
    result = run_reliability_benchmark(output, work / "work", exported_tiny_model, tiny_model,
                                       exported_tiny_model.parent / "eval", small_splits, PARTS, soak_seconds=30.0,
                                       soak_clients=4, fuzz_examples=3, minute_s=10.0)
    return output, result


def test_every_fault_case_ends_with_nothing_lost_and_the_service_answering(bench):
    _, result = bench
    cases = result["parts"]["faults"]["cases"]
    killed = cases["server_kill9_under_load"]
    assert killed["requests_answered_before_kill"] > 0 and killed["requests_failed_by_the_kill"] > 0
    assert killed["log_after_restart"]["unparseable"] == 0 and killed["answered_after_restart"] == 200
    monitor = killed["monitor"]
    assert monitor["rows_read"] == monitor["stored_predictions"] == killed["log_after_restart"]["valid"]
    mid_window = cases["monitor_kill9_mid_window"]
    assert mid_window["killed_with"]["pending"] > 0, "killed with a window half full"
    assert mid_window["after_restart"]["stored_predictions"] == mid_window["log"]["valid"] == 600
    writers = cases["registry_concurrent_writer_processes"]
    assert writers["versions"] == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3"] and writers["intact_copies"] == 4
    assert writers["history"] == 4 and writers["production"] in writers["versions"]
    for case in ("truncated", "bit_flipped"):
        refused = cases["corrupted_model_file"][case]
        assert refused["exit_code"] == 2 and "is not the" in refused["error"]
    store = cases["object_store_unreachable"]
    assert store["exit_code"] == 2 and "still failing after 5 attempts" in store["error"]
    assert all(case["passed"] for case in cases.values()) and result["parts"]["faults"]["passed"]


def test_the_soak_reports_each_minute_and_the_server_survives(bench):
    _, result = bench
    soak = result["parts"]["soak"]
    assert soak["errors"] == 0 and soak["server_alive_after"]
    assert [row["minute"] for row in soak["minutes"]] == [1, 2, 3]
    assert sum(row["requests"] for row in soak["minutes"]) == soak["requests"] > 0
    assert all(row["rss_mb"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in soak["minutes"])
    assert soak["rss_growth_minute2_to_last"] is not None and set(soak["targets"]) == {
        "zero_errors", "rss_growth_below_5pct", "p99_stable_within_20pct"}


def test_the_fuzz_part_and_the_recorded_settings(bench):
    output, result = bench
    fuzz = result["parts"]["fuzz"]
    assert fuzz["passed"] and fuzz["still_serving"] and fuzz["endpoints_with_5xx_or_dropped"] == []
    assert fuzz["requests"] == sum(endpoint["requests"] for endpoint in fuzz["endpoints"].values())
    assert result["settings"]["soak_clients"] == 4 and result["machine"] and result["git_commit"]
    assert output.is_file()


def test_a_rerun_with_the_same_settings_resumes_with_nothing_left(bench, tiny_model, exported_tiny_model,
                                                                  small_splits):
    output, result = bench
    work = output.parent / "work"
    again = run_reliability_benchmark(output, work, exported_tiny_model, tiny_model, exported_tiny_model.parent / "eval",
                                      small_splits, PARTS, soak_seconds=30.0, soak_clients=4, fuzz_examples=3,
                                      minute_s=10.0)
    assert again["parts"] == result["parts"], "every part was already done: none runs again"


def test_the_command_line_names_a_missing_run(tmp_path, capsys):
    assert main(["--runs-dir", str(tmp_path), "--output", str(tmp_path / "out.json")]) == 2
    assert "no local training run" in capsys.readouterr().err
