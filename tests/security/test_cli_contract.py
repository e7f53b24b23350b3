"""Issue 9, cases 3 (CLI half), 5 and 7: usage errors name the option and its range (exit 2), `edgeseg`
alone prints help, NaN/inf never reach a gate, Ctrl-C never reports success."""

import os
import signal
import subprocess
import sys
import time

import pytest

from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.bench.store import ResultStore
from edgeseg.testing import make_checkpoint, run_cli


def _run(median_ms: float, **kw) -> BenchResult:
    times = [median_ms * (1 + 0.01 * i) for i in range(-2, 3)]
    base = dict(model="mobileone_s0", device="host-cpu", backend="onnxruntime", input_size=(224, 224), precision="fp32")
    return BenchResult(**{**base, **kw}, stats=LatencyStats.from_times(times), times_ms=times)


@pytest.fixture()
def db(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(_run(1.0))
    store.add(_run(4.36))  # +336% slower
    return store.path


def test_no_arguments_prints_help_without_error(capsys):
    code, out, err = run_cli([], capsys)
    assert code in (0, 2) and "Usage" in out + err and "export" in out + err
    assert "error" not in err.lower()
    code, out, err = run_cli(["results"], capsys)
    assert code in (0, 2) and "compare" in out + err and "error" not in err.lower()


@pytest.mark.parametrize("args, option, allowed", [
    (["export", "x.pth", "--batch", "0"], "--batch", "from 1"),
    (["bench", "m", "--iterations", "0"], "--iterations", "from 1"),
    (["bench", "m", "--port", "70000"], "--port", "to 65535"),
    (["results", "list", "--limit", "0"], "--limit", "from 1"),
])
def test_usage_errors_name_option_and_range(args, option, allowed, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if not l.startswith(">> ")]  # progress lines are not errors
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0] and allowed in lines[0], err
    assert "BadParameter" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_threshold_cannot_turn_the_gate_off(db, value, capsys):
    code, out, err = run_cli(["results", "compare", "1", "2", "--fail-if-slower", value, "--db", str(db)], capsys)
    assert code == 2, out + err
    assert "gate: passed" not in out and "--fail-if-slower" in err and "finite" in err
    # a real limit still gates: +336% fails
    code, out, err = run_cli(["results", "compare", "1", "2", "--fail-if-slower", "5", "--db", str(db)], capsys)
    assert code == 3 and "FAILED" in out


def test_bench_baseline_nan_refused_before_measuring(db, capsys, tmp_path):
    t = time.perf_counter()
    code, out, err = run_cli(["bench", "mobileone_s0", "--baseline", "1", "--fail-if-slower", "nan", "--db", str(db)], capsys)
    assert code == 2 and "--fail-if-slower" in err and "finite" in err
    assert time.perf_counter() - t < 20  # refused at parse time, nothing measured


@pytest.mark.parametrize("args", [
    ["bench", "m", "--timeout", "nan"], ["bench", "m", "--timeout", "inf"], ["bench", "m", "--fail-if-slower", "inf"],
    ["parity", "a", "b", "--rtol", "nan"], ["parity", "a", "b", "--atol", "logits=inf"], ["parity", "a", "b", "--tol", "min_miou=nan"],
    ["bench", "m", "--seed", "-1"], ["export", "a.pth", "--opset", "-5"], ["bench", "m", "--warmup", "1e400"],
])
def test_every_numeric_option_is_finite_and_in_range(args, capsys):
    code, out, err = run_cli(args, capsys)
    assert code in (1, 2) and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("cmd", [["results", "show", "99999999999999999999999"],
                                 ["results", "compare", "1", "99999999999999999999999"],
                                 ["bench", "m", "--baseline", "99999999999999999999999"]])
def test_huge_result_ids_are_usage_errors(db, cmd, capsys):
    code, out, err = run_cli([*cmd, "--db", str(db)], capsys)
    assert code == 2 and "OverflowError" not in err and "from 1 to" in err, err


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path):
    ckpt = tmp_path / "s0.pth"
    make_checkpoint("mobileone_s0", ckpt, seed=4)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = set(os.listdir(tmp_path))
    for delay in (0.0, 1.5):
        proc = subprocess.Popen([sys.executable, "-m", "edgeseg", "export", str(ckpt), "-o", str(out_dir / "x.onnx"), "--overwrite"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()  # ">> loading ..." : the command is past parsing
        assert "loading" in line, line + proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (proc.returncode, err)
        assert err.strip().splitlines()[-1] == "interrupted", err
        assert os.listdir(out_dir) == [], "partial output left behind"
    assert set(os.listdir(tmp_path)) == before


def test_a_swallowed_ctrl_c_still_stops_the_publish(tmp_path):
    """Native code (pybind11, ORT) can swallow the KeyboardInterrupt of a SIGINT; the flag the
    CLI's handler also sets makes the atomic rename refuse, so nothing is published."""
    from edgeseg import interrupt
    from edgeseg.atomic import atomic_output

    target = tmp_path / "x.onnx"
    interrupt.request()
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"complete, but the user asked to stop")
    finally:
        interrupt.clear()
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:  # cleared: publishing works again
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"
