"""JUnit XML for CI: one test suite per artifact, one test case per output and threshold, so a
CI page shows which metric of which output failed (and what tolerance would have passed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgeseg.atomic import atomic_output


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def build_junit(summary: dict[str, Any]) -> ET.Element:
    root = ET.Element("testsuites", name="edgeseg parity")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for entry in summary["artifacts"]:
        art = Path(entry["artifact"]).name
        suite = ET.SubElement(root, "testsuite", name=f"parity.{art}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("arch", summary.get("arch")), ("seed", summary.get("seed")), ("backend", entry.get("backend")),
                           ("precision", entry.get("precision")), ("input_size", entry.get("input_size")), ("batch", entry.get("batch"))):
            ET.SubElement(props, "property", name=key, value=_fmt(value))
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        classname = f"edgeseg.parity.{art}"
        report = entry["report"]
        if entry["status"] == "skipped":
            case = ET.SubElement(suite, "testcase", classname=classname, name="parity", time="0")
            ET.SubElement(case, "skipped", message=f"skipped: {entry.get('reason')}")
            counts["tests"] += 1
            counts["skipped"] += 1
        elif not report["outputs"]:
            case = ET.SubElement(suite, "testcase", classname=classname, name="parity", time=_fmt(entry.get("seconds", 0.0)))
            ET.SubElement(case, "failure", message=str(entry.get("reason")), type="ParityFailure").text = str(entry.get("reason"))
            counts["tests"] += 1
            counts["failures"] += 1
        for out in report["outputs"]:
            for check in out["checks"]:
                case = ET.SubElement(suite, "testcase", classname=classname, name=f"{out['name']}.{check['metric']}", time="0")
                counts["tests"] += 1
                text = f"{check['metric']} = {_fmt(check['value'])}, threshold {check['op']} {_fmt(check['threshold'])}"
                if not check["passed"]:
                    if check.get("needed") is not None:
                        text += f"; would pass with {check['tolerance']}={_fmt(check['needed'])}"
                    ET.SubElement(case, "failure", message=text, type="ParityFailure").text = text
                    counts["failures"] += 1
                else:
                    ET.SubElement(case, "system-out").text = text
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
        suite.set("time", _fmt(float(entry.get("seconds") or 0.0)))
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("errors", "0")
    return root


def write_junit(summary: dict[str, Any], path: str | Path) -> Path:
    tree = ET.ElementTree(build_junit(summary))
    ET.indent(tree)
    with atomic_output(path, overwrite=True) as tmp:
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
        ET.parse(tmp)  # well-formed before it replaces anything
    return Path(path)
