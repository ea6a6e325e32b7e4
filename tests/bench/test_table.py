"""The benchmark's table and verdicts (pure: no lab is started)."""
import io

from tests.bench.bench import FLEET_ROWS, ROWS, Row, Target, latency_rows, report


def test_target_comparisons_and_text():
    assert Target("<=", 3).met(3) and not Target("<=", 3).met(3.01)
    assert Target(">=", 1).met(1) and not Target(">", 1).met(1)
    assert str(Target("<=", 2, "2 per memory tick")) == "<= 2, 2 per memory tick"


def test_rows_without_a_result_are_left_out_and_labels_take_the_sample_count():
    rows = latency_rows("x -> host", "x", p50=Target("<=", 3)) + [Row("y", "never run", lambda v: v)]
    lines = [row.evaluate({"x": [1.0, 2.0, 9.0]}) for row in rows]
    assert lines[0] == ("x -> host p50 (ms, n=3)", "2.00", "<= 3", True)
    assert lines[1] == ("x -> host p99 (ms)", "9.00", "", None)
    assert lines[2] is None


def test_the_verdict_is_on_the_figure_as_printed():
    row = Row("x", "x", lambda v: v, "%.1f", Target("<=", 3))
    assert row.evaluate({"x": 3.04})[3] is True    # printed 3.0
    assert row.evaluate({"x": 3.06})[3] is False   # printed 3.1


def test_a_miss_is_a_miss_line_and_exit_status_1():
    rows = [Row("a", "a (ms)", lambda v: v, "%.0f", Target("<=", 10)),
            Row("b", "b (ms)", lambda v: v, "%.0f", Target("<=", 10)),
            Row("c", "c / d", lambda v: (v, v * 2), ("%.1f", "%d"))]
    out = io.StringIO()
    assert report(rows, {"a": 5, "b": 12, "c": 1.5}, 42, out) == 1
    text = out.getvalue()
    assert "PASS  a (ms): 5 (target <= 10)\n" in text
    assert "MISS  b (ms): 12 (target <= 10)\n" in text
    assert "1.5 / 3" in text
    assert text.endswith("1 of 2 targets met, missed: b (ms); the benchmark took 42 s\n")
    out = io.StringIO()
    assert report(rows[:1], {"a": 5}, 1, out) == 0
    assert out.getvalue().endswith("1 of 1 targets met; the benchmark took 1 s\n")


def test_every_declared_row_evaluates_on_results_of_the_shapes_the_steps_store():
    results = {
        "start": {"ms": 90.0}, "flag": [2.0, 3.0], "hostname": [2.0], "migration": [17.0], "rss": {"mib": 19.0},
        "idle": {"seconds": 60.0, "requests_per_hour": 60.0, "writes_per_hour": 0.0, "wakeups_per_min": 2.0,
                 "cpu_s_per_hour": 0.6},
        "addr_add": [4.0], "addr_del": [3.0],
        "fleet": {"n": 10, "start": 0.6, "idle_cpu": 0.0, "idle_req": 0.0, "mig": 0.1, "mig_cpu": 0.1,
                  "mig_req": 600},
    }
    lines = [row.evaluate(results) for row in ROWS + FLEET_ROWS]
    assert all(lines)
    assert [line[3] for line in lines if line[3] is not None] == [True] * 11
    assert any(line[0] == "fleet of 10: idle xenstored CPU (%) / requests per s" for line in lines)


def test_a_new_latency_pair_with_targets_is_one_declaration():
    rows = ROWS + [*latency_rows("hostname change -> host", "hostname", p50=Target("<=", 3), p99=Target("<=", 10))]
    out = io.StringIO()
    assert report(rows, {"hostname": [1.0, 2.0, 30.0]}, 5, out) == 1
    text = out.getvalue()
    assert "PASS  hostname change -> host p50 (ms, n=3): 2.00 (target <= 3)\n" in text
    assert "MISS  hostname change -> host p99 (ms): 30.00 (target <= 10)\n" in text
