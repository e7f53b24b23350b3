"""CLI: bench / devices / results / report, JSON output, one-line errors and exit codes."""

from __future__ import annotations

import json
import textwrap

import pytest

from edgeseg.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_devices_list_show_validate(capsys, tmp_path):
    code, out, _ = run(["devices", "--json"], capsys)
    names = [p["name"] for p in json.loads(out)["profiles"]]
    assert code == 0 and {"jetson-nano", "iphone-12-pro", "host-cpu", "rk3588"} <= set(names)
    code, out, _ = run(["devices", "show", "jetson-nano", "--json"], capsys)
    assert code == 0 and json.loads(out)["software"]["tensorrt"] == "8.2.1"
    code, out, _ = run(["devices", "show", "jetson-nano"], capsys)
    assert code == 0 and "opset_max: 13" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: bad
        description: x
        runtime: onnxruntime
        precisions: [fp32]
        default_precision: fp32
        ceilings: {fp32: {gflops: 0, gbps: 1}}
        """))
    code, out, err = run(["devices", "validate", str(bad)], capsys)
    assert code == 1 and "field 'ceilings.fp32.gflops'" in err and err.count("\n") == 1
    code, _, err = run(["devices", "show", "nope"], capsys)
    assert code == 1 and err.startswith("error: unknown device profile")


def test_bench_predict_json_results_and_report(capsys, tmp_path):
    db = tmp_path / "r.sqlite"
    code, out, err = run(["bench", "mobileone_s0", "--device", "iphone-12-pro", "--input-size", "128", "--db", str(db), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    (r,) = data["results"]
    assert r["label"] == "predicted" and r["backend"] == "predicted" and r["median_ms"] > 0 and r["id"] == 1
    code, out, _ = run(["bench", "mobileone_s0", "--device", "jetson-nano", "--input-size", "128", "--db", str(db)], capsys)
    assert code == 0 and "PREDICTED" in out and "no --host for jetson-nano" in out
    code, out, _ = run(["results", "list", "--db", str(db), "--json"], capsys)
    assert [x["device"] for x in json.loads(out)["runs"]] == ["jetson-nano", "iphone-12-pro"]
    code, out, _ = run(["results", "show", "1", "--db", str(db), "--json"], capsys)
    assert code == 0 and json.loads(out)["extra"]["prediction"]["device"] == "iphone-12-pro"
    code, out, _ = run(["report", "--db", str(db), "-o", str(tmp_path / "rep"), "--json"], capsys)
    written = json.loads(out)["written"]
    assert code == 0 and {"md", "json", "csv", "latency_by_device"} <= set(written)
    assert "predicted" in (tmp_path / "rep" / "report.md").read_text()


def test_bench_host_and_regression_gate(capsys, tmp_path):
    from edgeseg.bench.result import BenchResult
    from edgeseg.stats import LatencyStats
    from edgeseg.bench.store import ResultStore

    db = tmp_path / "r.sqlite"
    code, out, err = run(["bench", "mobileone_s0", "--input-size", "64", "-n", "3", "--warmup", "1", "--threads", "1",
                          "--backend", "pytorch", "--db", str(db), "--json"], capsys)
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["backend"] == "pytorch" and r["stats"]["iterations"] == 3
    # a baseline 1000x faster than anything real: the gate must trip, exit 3, one line
    store = ResultStore(db)
    fast = BenchResult(model="mobileone_s0", device="host-cpu", backend="pytorch", input_size=(64, 64), precision="fp32",
                       stats=LatencyStats.from_times([r["median_ms"] / 1000] * 3), times_ms=[r["median_ms"] / 1000] * 3, threads=1)
    base = store.add(fast)
    code, out, err = run(["results", "compare", str(base), str(r["id"]), "--db", str(db), "--fail-if-slower", "5"], capsys)
    assert code == 3 and "slower than baseline" in err and err.count("\n") == 1
    code, out, _ = run(["results", "compare", str(r["id"]), str(base), "--db", str(db), "--fail-if-slower", "5", "--json"], capsys)
    assert code == 0 and json.loads(out)["gate"]["passed"] is True
    code, out, err = run(["bench", "mobileone_s0", "--input-size", "64", "-n", "2", "--warmup", "0", "--backend", "pytorch",
                          "--db", str(db), "--baseline", str(base), "--fail-if-slower", "10", "--json"], capsys)
    assert code == 3 and json.loads(out)["regression"]["failed"] is True


def test_bench_errors(capsys, tmp_path):
    code, _, err = run(["bench", "mobileone_s0", "--fail-if-slower", "5", "--no-store"], capsys)
    assert code == 1 and "--baseline" in err
    code, _, err = run(["bench", "--no-store"], capsys)
    assert code == 1 and "TARGET or --matrix" in err
    code, _, err = run(["bench", "mobileone_s0", "--warmup", "soon", "--no-store"], capsys)
    assert code == 1 and "warm-up" in err and err.count("\n") == 1
    code, _, err = run(["results", "show", "42", "--db", str(tmp_path / "empty.sqlite")], capsys)
    assert code == 1 and "no run 42" in err


def test_bench_matrix_sweep(capsys, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent("""\
        models: [mobileone_s0]
        sizes: [64, 96]
        devices:
          - {name: jetson-nano, predict: true}
          - {name: iphone-12-pro, predict: true}
        """))
    db = tmp_path / "r.sqlite"
    code, out, err = run(["bench", "--matrix", str(sweep), "--db", str(db), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["failed"] == 0 and len(data["jobs"]) == 4
    assert [(j["device"], j["size"]) for j in data["jobs"]] == [("jetson-nano", [64, 64]), ("jetson-nano", [96, 96]),
                                                                ("iphone-12-pro", [64, 64]), ("iphone-12-pro", [96, 96])]
    assert all(j["results"][0]["label"] == "predicted" for j in data["jobs"])
