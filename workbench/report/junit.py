"""A gate result as JUnit XML, so CI systems show each threshold as a test case.

The layout is the common one (Jenkins' junit-10.xsd, read by GitHub Actions reporters, GitLab and Jenkins):
`<testsuites>` holding one `<testsuite>` with `tests`/`failures`/`errors`/`skipped` counts, one `<testcase>` per
check, `<failure message=... type=...>` for a missed threshold (type `threshold`) or an absent metric (type
`missing`), `<skipped message=...>` for an inconclusive check (the number cannot decide; the gate still fails unless
the check allows it), and the interval warnings in `<system-out>`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from workbench.output import atomic_write
from workbench.report.gate import GateResult

# XML 1.0 cannot hold these code points even escaped; they are replaced so the file always parses.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(s: object) -> str:
    return _NOT_XML.sub("\ufffd", str(s))


def to_xml(result: GateResult, suite: str = "wb gate") -> bytes:
    tests, skipped = len(result.results), result.count("inconclusive")
    failures = sum(r.verdict in ("fail", "missing") for r in result.results)
    counts = {"tests": str(tests), "failures": str(failures), "errors": "0", "skipped": str(skipped), "time": "0"}
    root = ET.Element("testsuites", {"name": _text(suite), **counts})
    ts = ET.SubElement(root, "testsuite", {"name": _text(f"{suite}: {result.run}"), **counts})
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", {"name": "thresholds", "value": _text(result.source)})
    ET.SubElement(props, "property", {"name": "run", "value": _text(result.run)})
    for r in result.results:
        section = r.check.metric.split(".")[0]
        case = ET.SubElement(
            ts, "testcase", {"name": _text(r.check.label), "classname": f"wb.gate.{_text(section)}", "time": "0"}
        )
        if r.verdict == "inconclusive":
            allowed = " (allowed)" if r.check.allow_inconclusive else " (fails the gate)"
            ET.SubElement(case, "skipped", {"message": _text(f"inconclusive{allowed}: {r.message}")})
        elif not r.passed:
            kind = "missing" if r.verdict == "missing" else "threshold"
            failure = ET.SubElement(case, "failure", {"message": _text(r.message), "type": kind})
            failure.text = _text(f"{r.check.label}: {r.message}")
        if r.warnings:
            ET.SubElement(case, "system-out").text = _text("\n".join(f"warning: {w}" for w in r.warnings))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: Path, result: GateResult) -> None:
    with atomic_write(Path(path)) as f:
        f.write(to_xml(result))
