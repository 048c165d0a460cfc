"""`dynod smoke`'s summary and JUnit XML (README, "`dynod smoke`"): one line and one testcase per
check, the first failure named with its log, and XML that parses whatever the app printed."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dynod.smoke_report import Check, Outcome, junit, passed, summary

CHECKS = [
    Check("build", Outcome.PASSED, 1.5),
    Check("boot", Outcome.FAILED, 3.0, "web.1 crashed: Process exited with status 1", ["a", "b"]),
    Check("GET / -> 200", Outcome.SKIPPED, detail="an earlier check failed"),
]


def test_summary_names_the_first_failure_and_shows_its_log() -> None:
    lines = summary(CHECKS, 4.56, "shop")
    assert lines[0] == "    ok  build           1.50s"
    assert lines[1].startswith("  FAIL  boot            3.00s  web.1 crashed")
    assert lines[2] == "  skip  GET / -> 200           an earlier check failed"
    assert lines[3] == (
        "dynod smoke: shop FAILED (boot: web.1 crashed: Process exited with status 1) in 4.6s"
    )
    assert lines[4:] == ["--- the last 2 log lines of shop ---", "a", "b"]
    assert not passed(CHECKS)
    assert passed(CHECKS[:1]) and not passed([])
    assert summary(CHECKS[:1], 1.5, "shop")[-1] == "dynod smoke: shop passed 1 checks in 1.5s"


def test_junit_has_a_testcase_per_check_and_the_log_as_failure_text() -> None:
    root = ET.fromstring(junit(CHECKS, 4.5, "shop", "2026-12-07T19:00:00+00:00"))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["build", "boot", "GET / -> 200"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message", "").startswith("web.1 crashed")
    assert (failure.text or "").splitlines()[1:] == ["a", "b"]
    assert cases[2].find("skipped") is not None


def test_junit_parses_whatever_the_app_printed() -> None:
    noisy = Check("boot", Outcome.FAILED, 1.0, "crashed <&>", ["\x1b[31mred\x1b[0m \x00 ]]> é"])
    failure = ET.fromstring(junit([noisy], 1.0, "shop", "now")).find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "crashed <&>"
    assert "\ufffd[31mred\ufffd[0m \ufffd ]]> é" in (failure.text or "")
