"""Router log lines in Heroku's format, and the router's own pages."""

from __future__ import annotations

import re

from router.records import FAILURES, error_page, log_line, restriction

FIELDS = dict(
    method="GET",
    path="/",
    host="app.localhost",
    request_id="0b9ea5d4-1b8c-4a5e-9d1f-6e0b1c2d3e4f",
    fwd="127.0.0.1",
    dyno="web.1",
    connect=0.0,
    service=0.003,
    status=200,
    bytes_sent=1234,
)


def test_info_line_matches_heroku() -> None:
    assert log_line(**FIELDS) == (  # type: ignore[arg-type]
        'at=info method=GET path="/" host=app.localhost '
        "request_id=0b9ea5d4-1b8c-4a5e-9d1f-6e0b1c2d3e4f "
        'fwd="127.0.0.1" dyno=web.1 connect=0ms service=3ms status=200 bytes=1234 protocol=http'
    )


def test_error_line_names_code_and_description() -> None:
    line = log_line(**{**FIELDS, "status": 503, "service": 30.0, "failure": FAILURES["H12"]})  # type: ignore[arg-type]
    assert line.startswith('at=error code=H12 desc="Request timeout" method=GET path="/"')
    assert "service=30000ms status=503" in line


def test_fields_that_never_happened_are_empty_like_herokus_h14() -> None:
    line = log_line(
        **{
            **FIELDS,
            "dyno": "",
            "connect": None,
            "service": None,
            "status": 503,
            "bytes_sent": None,
            "failure": FAILURES["H14"],
        }  # type: ignore[arg-type]
    )
    assert 'desc="No web processes running"' in line
    assert "dyno= connect= service= status=503 bytes= protocol=http" in line


def test_client_side_failures_name_the_socket() -> None:
    line = log_line(**{**FIELDS, "status": 499, "failure": FAILURES["H27"]})  # type: ignore[arg-type]
    assert line.startswith('sock=client at=error code=H27 desc="Client Request Interrupted"')


def test_quotes_and_spaces_cannot_break_the_line() -> None:
    line = log_line(**{**FIELDS, "path": '/a"b', "host": "x y"})  # type: ignore[arg-type]
    assert 'path="/a%22b" host=x%20y ' in line


def test_control_characters_from_headers_cannot_reach_a_terminal_or_split_the_line() -> None:
    # h11 passes ESC, tab and C1 controls (NEL, CSI) in header values; Host and
    # X-Forwarded-For are logged, and `dynod start` prints the log on a terminal.
    line = log_line(
        **{**FIELDS, "host": "a\x1b[2Jb", "fwd": "1.2.3.4\x85x\t\x9b31m, 127.0.0.1"}  # type: ignore[arg-type]
    )
    assert line.isprintable() and len(line.splitlines()) == 1
    assert " host=a%1B[2Jb " in line
    assert ' fwd="1.2.3.4%85x%09%9B31m, 127.0.0.1" ' in line


def test_restriction_is_h25_with_the_reason() -> None:
    failure = restriction(431, "too many headers")
    assert (failure.code, failure.status, failure.desc) == (
        "H25",
        431,
        "HTTP restriction: too many headers",
    )


def test_codes_and_statuses() -> None:
    assert {code: f.status for code, f in FAILURES.items()} == {
        **{
            code: 503
            for code in ("H10", "H12", "H13", "H14", "H15", "H17", "H18", "H19", "H20", "H21")
        },
        "H27": 499,
        "H28": 499,
    }


def test_error_page_is_a_complete_closing_response() -> None:
    page = error_page(503)
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in head
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert length == len(body) and b"Application error" in body


def test_pages_name_no_internals() -> None:
    for status in (400, 404, 408, 414, 431, 503):
        body = error_page(status).partition(b"\r\n\r\n")[2].lower()
        for word in (b"dyno", b"web.", b"127.0.0.1", b"router", b"trio", b"traceback"):
            assert word not in body, (status, word)


def test_head_page_has_no_body() -> None:
    assert error_page(404, body=False).endswith(b"\r\n\r\n")
