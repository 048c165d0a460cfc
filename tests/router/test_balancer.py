"""Round-robin with quarantine and the no-dyno verdicts, on a plain-number clock."""

from __future__ import annotations

from router.backend import DynoState, WebDyno
from router.balancer import Balancer, Refuse, Try, Wait

UP = DynoState.UP


def dynos(*states: DynoState) -> list[WebDyno]:
    return [WebDyno(f"web.{i}", ("127.0.0.1", 5000 + i), s) for i, s in enumerate(states, 1)]


def first(balancer: Balancer, table: list[WebDyno], now: float = 0.0) -> str:
    decision = balancer.choose("app", table, now)
    assert isinstance(decision, Try)
    return decision.dynos[0].name


def test_round_robin_visits_each_up_dyno_in_turn() -> None:
    balancer, table = Balancer(), dynos(UP, UP, UP)
    assert [first(balancer, table) for _ in range(6)] == ["web.1", "web.2", "web.3"] * 2


def test_candidates_are_every_up_dyno_starting_at_the_turn() -> None:
    balancer, table = Balancer(), dynos(UP, DynoState.CRASHED, UP, DynoState.STARTING)
    balancer.choose("app", table, 0)
    decision = balancer.choose("app", table, 0)
    assert isinstance(decision, Try)
    assert [d.name for d in decision.dynos] == ["web.3", "web.1"]


def test_turns_are_kept_per_app() -> None:
    balancer, table = Balancer(), dynos(UP, UP)
    assert first(balancer, table) == "web.1"
    assert balancer.choose("other", table, 0) == Try(tuple(table))


def test_quarantined_dyno_goes_last_for_five_seconds() -> None:
    balancer, table = Balancer(quarantine_seconds=5.0), dynos(UP, UP, UP)
    balancer.quarantine(table[1], now=100.0)
    seen = [first(balancer, table, now=101.0) for _ in range(6)]
    assert "web.2" not in seen
    decision = balancer.choose("app", table, 104.9)
    assert isinstance(decision, Try) and decision.dynos[-1].name == "web.2"
    assert "web.2" in [first(balancer, table, now=105.0) for _ in range(3)]


def test_quarantine_is_per_address_so_a_restarted_dyno_is_fresh() -> None:
    balancer, table = Balancer(), dynos(UP, UP)
    balancer.quarantine(table[0], now=0.0)
    moved = [WebDyno("web.1", ("127.0.0.1", 6001)), table[1]]
    assert [first(balancer, moved, now=1.0) for _ in range(2)] == ["web.1", "web.2"]


def test_all_quarantined_are_still_tried() -> None:
    balancer, table = Balancer(), dynos(UP, UP)
    for dyno in table:
        balancer.quarantine(dyno, now=0.0)
    decision = balancer.choose("app", table, 1.0)
    assert isinstance(decision, Try) and len(decision.dynos) == 2


def test_no_dynos_is_h14() -> None:
    assert Balancer().choose("app", [], 0) == Refuse("H14")


def test_all_crashed_is_h10() -> None:
    assert Balancer().choose("app", dynos(DynoState.CRASHED, DynoState.CRASHED), 0) == Refuse("H10")


def test_starting_dynos_make_the_request_wait() -> None:
    table = dynos(DynoState.CRASHED, DynoState.STARTING)
    assert Balancer().choose("app", table, 0) == Wait(wake=False)


def test_sleeping_dynos_are_woken() -> None:
    assert Balancer().choose("app", dynos(DynoState.IDLE), 0) == Wait(wake=True)
