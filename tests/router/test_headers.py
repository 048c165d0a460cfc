"""Header rules: limits, X-Forwarded-*, X-Request-Id, Via, hop-by-hop removal, Host → app."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.config import RouterConfig
from router.headers import (
    Forwarded,
    Rejected,
    app_name,
    forward_request,
    forward_response,
    valid_request_id,
)

NEW_ID = "11111111-2222-4333-8444-555555555555"


def triples(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    return [(name, name.lower(), value) for name, value in pairs]


def pairs(result: Forwarded | list[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    headers = result.headers if isinstance(result, Forwarded) else result
    return [(raw, value) for raw, _, value in headers]


def forward(
    headers: list[tuple[bytes, bytes]], target: bytes = b"/", **config: Any
) -> Forwarded | Rejected:
    return forward_request(
        b"GET",
        target,
        triples(headers),
        client_ip="10.0.0.9",
        port=8080,
        now_ms=1700000000123,
        new_id=lambda: NEW_ID,
        config=RouterConfig(**config),
    )


def ok(headers: list[tuple[bytes, bytes]], **config: Any) -> Forwarded:
    result = forward(headers, **config)
    assert isinstance(result, Forwarded), result
    return result


def named(result: Forwarded, name: bytes) -> list[bytes]:
    return [v for _, k, v in result.headers if k == name]


def test_router_adds_forwarding_headers() -> None:
    result = ok([(b"Host", b"app.localhost:8080")])
    assert pairs(result) == [
        (b"Host", b"app.localhost:8080"),
        (b"X-Forwarded-For", b"10.0.0.9"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Port", b"8080"),
        (b"X-Request-Start", b"1700000000123"),
        (b"X-Request-Id", NEW_ID.encode()),
        (b"Via", b"1.1 dynod"),
    ]
    assert (result.host, result.request_id, result.forwarded_for) == (
        "app.localhost:8080",
        NEW_ID,
        "10.0.0.9",
    )
    assert not result.body and not result.upgrade


def test_forwarded_for_is_appended_and_via_chained() -> None:
    result = ok(
        [(b"x-forwarded-for", b"1.2.3.4"), (b"X-Forwarded-For", b"5.6.7.8"), (b"Via", b"1.0 corp")]
    )
    assert named(result, b"x-forwarded-for") == [b"1.2.3.4, 5.6.7.8, 10.0.0.9"]
    assert named(result, b"via") == [b"1.0 corp, 1.1 dynod"]


def test_client_cannot_set_proto_port_or_start() -> None:
    result = ok(
        [
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Port", b"443"),
            (b"X-Request-Start", b"1"),
        ]
    )
    assert named(result, b"x-forwarded-proto") == [b"http"]
    assert named(result, b"x-forwarded-port") == [b"8080"]
    assert named(result, b"x-request-start") == [b"1700000000123"]


def test_valid_request_id_is_kept() -> None:
    mine = b"abcDEF0123456789+/=-xyz"
    result = ok([(b"X-Request-Id", mine)])
    assert named(result, b"x-request-id") == [mine] and result.request_id == mine.decode()


def test_invalid_request_id_is_replaced() -> None:
    for bad in (
        b"short",
        b"x" * 201,
        b"has space in it 1234567",
        b"semi;colon;0123456789abc",
        b"under_score_0123456789",  # Heroku's rule has no underscore
    ):
        assert ok([(b"X-Request-Id", bad)]).request_id == NEW_ID


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=220))
def test_request_id_rule(text: str) -> None:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-")
    expected = 20 <= len(text) <= 200 and set(text) <= allowed
    assert valid_request_id(text.encode()) == expected


def test_hop_by_hop_headers_are_removed() -> None:
    result = ok(
        [
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Sum"),
            (b"Upgrade", b"websocket"),
            (b"X-Secret", b"s"),
            (b"Accept", b"*/*"),
        ]
    )
    names = {k for _, k, _ in result.headers}
    assert b"accept" in names
    for gone in (
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-secret",
    ):
        assert gone not in names
    assert not result.upgrade


def test_connection_cannot_name_away_the_framing_or_the_host() -> None:
    # `Connection: content-length` would send the body unframed: the dyno would read it as a
    # second request (smuggled past every check, with its own X-Forwarded-For).
    result = ok(
        [
            (b"Host", b"app.localhost"),
            (b"Connection", b"content-length, host, x-forwarded-for, via, x-request-id"),
            (b"Content-Length", b"12"),
        ]
    )
    assert result.body
    assert named(result, b"content-length") == [b"12"]
    assert named(result, b"host") == [b"app.localhost"]
    assert named(result, b"x-forwarded-for") == [b"10.0.0.9"]
    assert named(result, b"via") == [b"1.1 dynod"] and named(result, b"x-request-id")


def test_chunked_body_is_reframed_and_content_length_kept() -> None:
    chunked = ok([(b"Transfer-Encoding", b"chunked")])
    assert chunked.body and named(chunked, b"transfer-encoding") == [b"chunked"]
    sized = ok([(b"Content-Length", b"12")])
    assert sized.body and named(sized, b"content-length") == [b"12"]
    assert not ok([(b"Content-Length", b"0")]).body


def test_upgrade_keeps_upgrade_and_connection() -> None:
    result = ok([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")])
    assert result.upgrade
    assert named(result, b"connection") == [b"upgrade"] and named(result, b"upgrade") == [
        b"websocket"
    ]


def test_limits() -> None:
    assert forward([], target=b"/" + b"a" * 8200) == Rejected(414, "request line too long")
    assert forward([(b"X-Big", b"v" * 8200)]) == Rejected(431, "header line too long")
    assert isinstance(forward([(b"X-Fits", b"v" * 8000)]), Forwarded)
    many = [(b"X-H%d" % i, b"v") for i in range(1001)]
    assert forward(many) == Rejected(431, "too many headers")
    assert isinstance(forward(many[:1000]), Forwarded)
    assert forward(many[:11], max_headers=10) == Rejected(431, "too many headers")


def test_conflicting_hosts_and_framing_are_refused() -> None:
    assert forward([(b"Host", b"a"), (b"Host", b"b")]).status == 400  # type: ignore[union-attr]
    assert forward([(b"Host", b"a"), (b"Host", b"a")]).status == 400  # type: ignore[union-attr]
    both = [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")]
    assert forward(both).status == 400  # type: ignore[union-attr]
    assert forward([(b"Host", b"a")], target=b"http://b/x").status == 400  # type: ignore[union-attr]


def test_a_repeated_content_length_reaches_the_dyno_once() -> None:
    result = forward([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Content-Length", b"3")])
    assert isinstance(result, Forwarded) and result.body
    assert [v for _, n, v in result.headers if n == b"content-length"] == [b"3"]


def test_a_host_that_is_not_one_host_is_refused() -> None:
    for bad in (b"a, b", b"a b", b"a/b", b"user@a", b"a?b", b"a#b", b"a:80:90", b"[::1"):
        assert forward([(b"Host", bad)]).status == 400, bad  # type: ignore[union-attr]
    for good in (
        b"app.localhost:8080",
        b"127.0.0.1",
        b"[::1]:80",
        b"a-b_c.~x",
        b"",
        b"app.localhost.",
    ):
        assert not isinstance(forward([(b"Host", good)]), Rejected), good


def test_absolute_form_for_the_same_host_becomes_a_path() -> None:
    result = forward([(b"Host", b"app.localhost")], target=b"http://app.localhost/x?y=1")
    assert isinstance(result, Forwarded) and result.target == b"/x?y=1"


def test_response_headers_lose_hop_by_hop_and_gain_via() -> None:
    out = forward_response(
        triples(
            [
                (b"Content-Length", b"3"),
                (b"Connection", b"close, X-Internal"),
                (b"X-Internal", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Set-Cookie", b"a=b"),
            ]
        )
    )
    assert pairs(out) == [
        (b"Content-Length", b"3"),
        (b"Set-Cookie", b"a=b"),
        (b"Via", b"1.1 dynod"),
    ]


def test_switching_response_keeps_upgrade() -> None:
    out = forward_response(
        triples(
            [
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", b"x"),
            ]
        ),
        upgrade=True,
    )
    assert pairs(out) == [
        (b"Sec-WebSocket-Accept", b"x"),
        (b"Via", b"1.1 dynod"),
        (b"Connection", b"upgrade"),
        (b"Upgrade", b"websocket"),
    ]


def test_app_name_from_host() -> None:
    assert app_name("myapp.localhost:8080", "localhost") == "myapp"
    assert app_name("MyApp.LocalHost.", "localhost") == "myapp"
    assert app_name("myapp.example.com", "example.com") == "myapp"
    assert app_name("127.0.0.1:8080", "localhost") == "127.0.0.1"
    assert app_name("127.0.0.1", "localhost") == "127.0.0.1"
    assert app_name("[::1]:8080", "localhost") == "[::1]"
    assert app_name("other.org", "localhost") == "other.org"
    assert app_name("", "localhost") == ""
