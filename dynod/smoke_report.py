"""What `dynod smoke` reports: each check's outcome and time, the summary it prints (one line per
check) and the JUnit XML that CI services display (one testcase per check, the log tail as a
failure's text). Pure: values in, text out."""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

import attrs


def _lines(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(lines)


class Outcome(str, enum.Enum):  # noqa: UP042 - str() and f-strings must keep giving the name
    PASSED = "ok"
    FAILED = "FAIL"
    SKIPPED = "skip"


@attrs.frozen
class Check:
    name: str  # `build`, `release`, `boot`, `GET /health -> 200`, `worker.1 stays up`
    outcome: Outcome
    seconds: float = 0.0
    detail: str = ""  # why it failed (or was skipped), in one line
    log: tuple[str, ...] = attrs.field(default=(), converter=_lines)  # a failure's last lines

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


def passed(checks: Sequence[Check]) -> bool:
    return not any(check.failed for check in checks) and bool(checks)


def summary(checks: Sequence[Check], seconds: float, app: str) -> list[str]:
    """One line per check (outcome, name, time, why), then the verdict; a failure's log last."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        took = f"{check.seconds:6.2f}s" if check.outcome is not Outcome.SKIPPED else " " * 7
        why = f"  {check.detail}" if check.detail else ""
        lines.append(f"  {check.outcome.value:>4}  {check.name:<{width}}  {took}{why}".rstrip())
    failures = [check for check in checks if check.failed]
    if not failures:
        lines.append(f"dynod smoke: {app} passed {len(checks)} checks in {seconds:.1f}s")
        return lines
    first = failures[0]
    lines.append(f"dynod smoke: {app} FAILED ({first.name}: {first.detail}) in {seconds:.1f}s")
    if first.log:
        lines.append(f"--- the last {len(first.log)} log lines of {app} ---")
        lines.extend(first.log)
    return lines


def junit(checks: Sequence[Check], seconds: float, app: str, timestamp: str) -> bytes:
    """A JUnit XML report: one testsuite `dynod smoke <app>`, one testcase per check."""
    counts = {
        "tests": str(len(checks)),
        "failures": str(sum(c.outcome is Outcome.FAILED for c in checks)),
        "errors": "0",
        "skipped": str(sum(c.outcome is Outcome.SKIPPED for c in checks)),
        "time": f"{seconds:.3f}",
    }
    suites = ET.Element("testsuites", {"name": "dynod smoke", **counts})
    suite = ET.SubElement(
        suites, "testsuite", {"name": f"dynod smoke {app}", "timestamp": timestamp, **counts}
    )
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"dynod smoke.{app}", "name": check.name, "time": f"{check.seconds:.3f}"},
        )
        if check.outcome is Outcome.FAILED:
            message = _xml_safe(check.detail)
            failure = ET.SubElement(case, "failure", {"message": message, "type": "failed"})
            failure.text = _xml_safe("\n".join((check.detail, *check.log)) + "\n")
        elif check.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped", {"message": _xml_safe(check.detail)})
    ET.indent(suites)
    return bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True)) + b"\n"


# What XML 1.0 cannot hold, even escaped (an app's colours, a NUL): shown as U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
