"""Formation strings and foreman's local port numbering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.core.formation import MAX_PER_TYPE, local_port, parse_formation, render_formation
from dynod.errors import ParseError

TYPES = ("web", "worker", "clock")


def test_commas_and_spaces() -> None:
    assert parse_formation("web=2,worker=1", TYPES) == {"web": 2, "worker": 1}
    assert parse_formation("web=2 worker=1", TYPES) == {"web": 2, "worker": 1}
    assert parse_formation("  web=2 ,\tworker=1, ", TYPES) == {"web": 2, "worker": 1}


def test_ordered_as_types_and_only_mentioned() -> None:
    f = parse_formation("clock=1,web=0", TYPES)
    assert f == {"web": 0, "clock": 1}
    assert list(f) == ["web", "clock"]


def test_all_and_overrides() -> None:
    assert parse_formation("all=1", TYPES) == {"web": 1, "worker": 1, "clock": 1}
    assert parse_formation("all=1,web=2", TYPES) == {"web": 2, "worker": 1, "clock": 1}
    assert parse_formation("web=2 all=0", TYPES) == {"web": 0, "worker": 0, "clock": 0}
    assert parse_formation("web=1,web=3", TYPES) == {"web": 3}
    assert parse_formation("all=2", ()) == {}


def test_quantities() -> None:
    assert parse_formation(f"web=0,worker=007,clock={MAX_PER_TYPE}", TYPES) == {
        "web": 0,
        "worker": 7,
        "clock": MAX_PER_TYPE,
    }
    for too_many in (f"web={MAX_PER_TYPE + 1}", "web=1000", "web=" + "9" * 5000):
        with pytest.raises(ParseError, match="too many: at most 100"):
            parse_formation(too_many, TYPES)


@pytest.mark.parametrize("text", ["web=-1", "web=1.5", "web", "web=", "=2", "web:2", "web = 2"])
def test_bad_entries(text: str) -> None:
    with pytest.raises(ParseError, match="write TYPE=N"):
        parse_formation(text, TYPES)


@pytest.mark.parametrize("text", ["", "   ", ",", " , "])
def test_empty(text: str) -> None:
    with pytest.raises(ParseError, match="empty formation"):
        parse_formation(text, TYPES)


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(ParseError, match="unknown process type 'wrker'.*web, worker, clock"):
        parse_formation("web=1,wrker=2", TYPES)
    with pytest.raises(ParseError, match="types are none"):
        parse_formation("web=1", ())


def test_render() -> None:
    assert render_formation({"web": 2, "worker": 1}) == "web=2,worker=1"
    assert render_formation({}) == ""


def test_local_ports_for_web_2_worker_1() -> None:
    f = parse_formation("web=2,worker=1", TYPES)
    ports = {
        f"{name}.{i}": local_port(5000, TYPES, name, i)
        for name, count in f.items()
        for i in range(1, count + 1)
    }
    assert ports == {"web.1": 5000, "web.2": 5001, "worker.1": 5100}
    assert local_port(5000, TYPES, "clock", 1) == 5200


def test_local_port_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        local_port(5000, TYPES, "nope", 1)
    with pytest.raises(ValueError):
        local_port(5000, TYPES, "web", 0)
    with pytest.raises(ValueError):
        local_port(5000, TYPES, "web", MAX_PER_TYPE + 1)


# Property tests ---------------------------------------------------------------------------

FORMATION_ALPHABET = st.sampled_from(
    list("=#'\"\\ \t\n\r:,-0123456789") + ["web", "worker", "all", "x", "100", "101"]
)
formation_text = st.lists(FORMATION_ALPHABET, max_size=30).map("".join)
names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True).filter(lambda n: n != "all")


def _parses_or_refuses(text: str) -> None:
    try:
        f = parse_formation(text, TYPES)
    except ParseError as err:
        assert "\n" not in str(err)
        return
    assert set(f) <= set(TYPES)
    assert all(0 <= n <= MAX_PER_TYPE for n in f.values())
    assert parse_formation(render_formation(f), TYPES) == f


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(formation_text)
def test_formation_shaped_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(
    st.lists(names, min_size=1, unique=True).flatmap(
        lambda types: st.tuples(
            st.just(types), st.dictionaries(st.sampled_from(types), st.integers(0, MAX_PER_TYPE))
        )
    )
)
def test_valid_formations_round_trip(case: tuple[list[str], dict[str, int]]) -> None:
    types, counts = case
    f = {t: counts[t] for t in types if t in counts}  # a formation is ordered as its types
    if f:
        assert parse_formation(render_formation(f), types) == f
