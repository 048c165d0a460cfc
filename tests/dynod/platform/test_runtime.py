"""Who dynos run as (runtime.DynoUsers): pure, no process switches user here. Which ports
dynos get (runtime.Ports)."""

from __future__ import annotations

import pwd
import random
import socket
import uuid

import attrs
import pytest

from dynod.errors import DynodError
from dynod.platform.runtime import DynoUsers, Ports
from dynod.state.config import DynosConfig, PortRange

NOBODY = pwd.getpwnam("nobody")


def test_a_root_dynod_gives_each_app_a_uid_of_its_own_in_the_users_group() -> None:
    users = DynoUsers(DynosConfig(), root=True)
    ids = [str(uuid.uuid4()) for _ in range(50)]
    owners = [users.owner(app_id) for app_id in ids]
    assert all(owner is not None and owner[1] == NOBODY.pw_gid for owner in owners)
    uids = {owner[0] for owner in owners if owner is not None}
    assert len(uids) == 50 and all(1900000000 <= uid <= 1900065535 for uid in uids)
    assert users.owner(ids[0]) == owners[0]  # asked again
    assert DynoUsers(DynosConfig(), root=True).owner(ids[7]) == owners[7]  # the next start
    assert users.switching


def test_colliding_apps_take_the_next_free_uid_until_the_range_is_full() -> None:
    users = DynoUsers(attrs.evolve(DynosConfig(), uid_range=(5000, 5001)), root=True)
    first, second = users.owner("a"), users.owner("b")
    assert first is not None and second is not None
    assert {first[0], second[0]} == {5000, 5001}
    try:
        users.owner("c")
    except RuntimeError as err:
        assert "widen it" in str(err)
    else:
        raise AssertionError("a third app fitted in a range of two")


def test_one_user_for_every_app_or_no_switch_at_all() -> None:
    shared = DynoUsers(attrs.evolve(DynosConfig(), uid_range=None), root=True)
    assert shared.owner("a") == shared.owner("b") == (NOBODY.pw_uid, NOBODY.pw_gid)
    unprivileged = DynoUsers(DynosConfig(), root=False)
    assert unprivileged.owner("a") is None and not unprivileged.switching


def test_a_port_given_back_rests_before_it_is_handed_out_again() -> None:
    ports = Ports(PortRange(64500, 64503), random.Random(7))  # above Linux's ephemeral ports
    first = ports.take()
    ports.give_back(first)
    second = ports.take()
    ports.give_back(second)
    assert ports.take() not in (first, second)  # two of four rest


def test_a_port_another_process_holds_is_never_handed_out() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        held = squatter.getsockname()[1]
        ports = Ports(PortRange(held, held))
        with pytest.raises(DynodError, match=rf"No free port in {held}-{held} .* port_range"):
            ports.take()
