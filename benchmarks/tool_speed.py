"""How long the tool's own commands take (issue 12, item 4): wall and CPU time per command.

    python benchmarks/tool_speed.py                                   # this environment's edgeseg
    python benchmarks/tool_speed.py --build before=/path/old-venv/bin/edgeseg --build after=.venv/bin/edgeseg
    python benchmarks/tool_speed.py --runs 5 --commands models info export --json tool_speed.json

Each command runs as a fresh process (what a user types), on a FastViT-SA12 checkpoint in
Apple's layout with non-trivial weights (or --ckpt). Builds and commands are interleaved
within each round, so load drift on a shared machine hits all alike. Detection signatures
are cached in the user cache directory: "cold" runs get an empty cache directory, "warm"
runs one that an earlier run filled (the usual case after the first command). Reported per
(command, build): median and min-max wall seconds, median CPU seconds (user+sys of the
process and its children; less sensitive to other processes than wall time), and the
1-minute load average around the runs. Targets (idle 2-core host): export <= 15 s,
models <= 1 s, info <= 2 s. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "help": ["--help"],
    "models": ["models"],
    "models --no-macs": ["models", "--no-macs"],
    "info": ["info", "{ckpt}"],
    "export": ["export", "{ckpt}", "-o", "{out}", "--overwrite"],
}
TARGETS_S = {"models": 1.0, "models --no-macs": 1.0, "info": 2.0, "export": 15.0}
CACHED = ("info", "export")  # commands that read the signature cache


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(exe: list[str], args: list[str], env: dict) -> tuple[float, float, int, str]:
    cpu0, t0 = _cpu_children(), time.perf_counter()
    p = subprocess.run(exe + args, env=env, capture_output=True, text=True)
    lines = (p.stderr or "").strip().splitlines()
    return time.perf_counter() - t0, _cpu_children() - cpu0, p.returncode, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", default=[], help="LABEL=EXECUTABLE of an edgeseg to time (repeatable)")
    ap.add_argument("--commands", nargs="+", default=["help", "models", "info", "export"], choices=list(COMMANDS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckpt", type=Path, help="checkpoint to use (default: a generated FastViT-SA12, Apple layout)")
    ap.add_argument("--no-cold", action="store_true", help="skip the empty-cache runs")
    ap.add_argument("--cold-builds", nargs="+", help="only these builds get empty-cache runs (a build without a cache needs none)")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args(argv)

    builds = {}
    for spec in args.build or [f"this={sys.executable} -m edgeseg"]:
        label, _, exe = spec.partition("=")
        builds[label] = exe.split()
    work = Path(tempfile.mkdtemp(prefix="tool_speed."))
    try:
        ckpt = args.ckpt
        if ckpt is None:
            from edgeseg.testing import make_checkpoint

            ckpt = work / "fastvit_sa12.pth"
            make_checkpoint("fastvit_sa12", ckpt, layout="apple-ml-fastvit", seed=1)
        cases = []
        for cmd in args.commands:
            modes = (["cold", "warm"] if not args.no_cold else ["warm"]) if cmd in CACHED else ["-"]
            cases += [(cmd, mode) for mode in modes]
        warm_dirs = {label: work / f"cache-{label}" for label in builds}
        times: dict[tuple, list] = {}
        load_before = os.getloadavg()[0]
        for label, exe in builds.items():  # fill the warm caches (not timed)
            env = {**os.environ, "XDG_CACHE_HOME": str(warm_dirs[label])}
            subprocess.run(exe + ["info", str(ckpt)], env=env, capture_output=True)
        for r in range(args.runs):
            for cmd, mode in cases:
                for label, exe in builds.items():
                    if mode == "cold" and args.cold_builds and label not in args.cold_builds:
                        continue
                    cache = warm_dirs[label] if mode != "cold" else Path(tempfile.mkdtemp(dir=work, prefix="cold."))
                    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
                    a = [x.format(ckpt=ckpt, out=work / f"out-{label}.onnx") for x in COMMANDS[cmd]]
                    wall, cpu, rc, last = run_once(exe, a, env)
                    times.setdefault((cmd, mode, label), []).append({"wall_s": wall, "cpu_s": cpu, "rc": rc, "load": os.getloadavg()[0]})
                    if rc != 0:
                        print(f"{label} {cmd}: exit {rc}: {last}", file=sys.stderr)
                    if mode == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                    print(f"round {r + 1}/{args.runs} {cmd} [{mode}] {label}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
        render(times, load_before, os.getloadavg()[0], args.runs)
        if args.json:
            args.json.write_text(json.dumps([{"command": c, "cache": m, "build": b, "runs": v} for (c, m, b), v in times.items()], indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(times: dict, load_before: float, load_after: float, runs: int) -> None:
    import statistics

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"edgeseg command times ({os.cpu_count()} CPUs, median of {runs}; load avg {load_before:.1f} -> {load_after:.1f})")
    for col in ("command", "cache", "build", "wall s (median)", "wall min-max", "CPU s (median)", "target", "exit"):
        t.add_column(col, justify="right" if "s" in col.split() or col in ("target", "exit") else "left")
    for (cmd, mode, label), rs in times.items():
        walls = [r["wall_s"] for r in rs]
        cpus = [r["cpu_s"] for r in rs]
        target = TARGETS_S.get(cmd)
        t.add_row(cmd, mode, label, f"{statistics.median(walls):.2f}", f"{min(walls):.2f}-{max(walls):.2f}",
                  f"{statistics.median(cpus):.2f}", f"<= {target:g} s" if target else "", ",".join(sorted({str(r['rc']) for r in rs})))
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
