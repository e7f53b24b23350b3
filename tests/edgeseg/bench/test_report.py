"""Reports: Markdown/JSON/CSV content and PNG plots from known runs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from edgeseg.bench.report import fused_vs_unfused, render_csv, render_markdown, write_report
from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.errors import EdgesegError


def run(i, backend, size, ms, device="host-cpu", model="fastvit_t8", predicted=False):
    if predicted:
        return BenchResult(model=model, device=device, backend="predicted", input_size=(size, size), precision="fp16", stats=None,
                           predicted=True, predicted_ms=ms, id=i)
    times = [ms * f for f in (0.98, 1.0, 1.02)]
    return BenchResult(model=model, device=device, backend=backend, input_size=(size, size), precision="fp32",
                       stats=LatencyStats.from_times(times), times_ms=times, iterations=3, fused=backend != "pytorch-unfused",
                       id=i)


@pytest.fixture
def runs():
    out, i = [], 1
    for size, base in ((256, 10.0), (512, 40.0), (1024, 160.0)):
        out.append(run(i, "pytorch-unfused", size, base * 2.0)); i += 1
        out.append(run(i, "pytorch", size, base)); i += 1
        out.append(run(i, "onnxruntime", size, base * 0.5)); i += 1
    out.append(run(i, "predicted", 256, 1.3, device="iphone-12-pro", predicted=True)); i += 1
    out.append(run(i, "predicted", 256, 30.0, device="jetson-nano", predicted=True)); i += 1
    out.append(run(i, "tensorrt", 256, 25.0, device="jetson-nano"))
    return out


def test_fused_vs_unfused_ratios(runs):
    ratios = fused_vs_unfused(runs)
    assert [r["input_size"] for r in ratios] == ["256x256", "512x512", "1024x1024"]
    assert all(r["speedup"] == pytest.approx(2.0) for r in ratios)


def test_markdown_labels_predictions(runs):
    md = render_markdown(runs)
    assert "| 10 | fastvit_t8 | iphone-12-pro | predicted | predicted |" in md
    assert "x2.00" in md and "## Fused vs unfused" in md
    assert md.count("\n| ") >= len(runs) + 3


def test_csv_and_json(runs, tmp_path):
    rows = list(csv.DictReader(io.StringIO(render_csv(runs))))
    assert len(rows) == len(runs) and rows[0]["backend"] == "pytorch-unfused" and float(rows[1]["median_ms"]) == 10.0
    written = write_report(runs, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(data["runs"]) == len(runs) and data["runs"][0]["times_ms"] == pytest.approx([19.6, 20.0, 20.4])
    assert set(written) == {"md", "json", "csv", "latency_vs_size", "latency_by_device"}


def test_plots_are_real_pngs(runs, tmp_path):
    written = write_report(runs, tmp_path / "rep", formats=["png"])
    for key in ("latency_vs_size", "latency_by_device"):
        data = open(written[key], "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(written["latency_vs_size"])
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_no_overwrite_and_bad_input(runs, tmp_path):
    write_report(runs, tmp_path / "rep", formats=["md", "png"])
    with pytest.raises(EdgesegError, match="already exists"):
        write_report(runs, tmp_path / "rep", formats=["md"])
    with pytest.raises(EdgesegError, match="already exists"):
        write_report(runs, tmp_path / "rep", formats=["png"])
    write_report(runs, tmp_path / "rep", formats=["md", "png"], overwrite=True)
    with pytest.raises(EdgesegError, match="unknown report format"):
        write_report(runs, tmp_path / "x", formats=["pdf"])
    with pytest.raises(EdgesegError, match="no runs"):
        write_report([], tmp_path / "x")


def test_size_plot_needs_two_sizes(tmp_path):
    one = [run(1, "pytorch", 256, 10.0), run(2, "pytorch-unfused", 256, 20.0)]
    written = write_report(one, tmp_path / "rep", formats=["png"])
    assert "latency_vs_size" not in written
