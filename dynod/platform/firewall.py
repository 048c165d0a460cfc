"""Dyno ports closed to other local users (docs/platform.md, "Ports"): when dynod is root and
nftables is present, an nftables table of dynod's own refuses a connection to a running dyno's
PORT unless it comes from dynod's uid or from the uid of that dyno's app."""

from __future__ import annotations

import itertools
import logging
import os
import shutil

import trio

from dynod.errors import DynodError

PREFIX = "dynod-"  # then dynod's pid and a count: one table per Platform, so none clash
NFT_TIMEOUT = 10.0

_count = itertools.count(1)

_log = logging.getLogger("dynod.platform")


def ruleset(table: str, dynod_uid: int) -> str:
    """The table: SYNs to a guarded port on this machine (the loopback carries every local
    destination) are refused with a reset unless (port, sender's uid) is allowed or the sender
    is dynod (the router). Other packets pass: closing connections, replies, other hosts, every
    port that is not a running dyno's."""
    return f"""\
table inet {table} {{
    set ports {{ type inet_service; }}
    set allowed {{ typeof tcp dport . meta skuid; }}
    chain output {{
        type filter hook output priority 0; policy accept;
        tcp dport . meta skuid @allowed accept
        meta skuid {dynod_uid} accept
        oifname "lo" tcp dport @ports tcp flags & (syn | ack) == syn reject with tcp reset
    }}
}}
"""


class Firewall:
    """dynod's nftables table: `open` at start (after dropping leftovers of dynods no longer
    running), `guard` a port for its app's uid while a dyno holds it, `close` at exit."""

    def __init__(self, nft: str, table: str | None = None) -> None:
        self.nft = nft
        self.table = table or f"{PREFIX}{os.getpid()}-{next(_count)}"

    @classmethod
    def here(cls) -> Firewall | None:
        """A firewall when dynod is root and `nft` is installed; None otherwise (a documented
        limit: dyno ports are then reachable by every local user, past the router)."""
        nft = shutil.which("nft")
        return cls(nft) if nft is not None and os.geteuid() == 0 else None

    async def open(self) -> bool:
        """Create the table; False (with a warning) when nftables refuses, e.g. in a container
        without CAP_NET_ADMIN: dynod then runs without it."""
        try:
            for table in await self._tables():
                pid = table[len(PREFIX) :].split("-")[0]
                if pid.isdigit() and not _running(int(pid)):
                    await self._nft(f"delete table inet {table}")
            await self._nft(ruleset(self.table, os.geteuid()))
        except DynodError as err:
            _log.warning("dynod: dyno ports stay open to every local user: %s", err)
            return False
        return True

    async def close(self) -> None:
        try:
            await self._nft(f"delete table inet {self.table}")
        except DynodError as err:
            _log.warning("dynod: nftables table %s is left behind: %s", self.table, err)

    async def guard(self, port: int, uid: int) -> None:
        """Only dynod and `uid` may connect to `port` from now on."""
        await self._nft(
            f"add element inet {self.table} allowed {{ {port} . {uid} }}\n"
            f"add element inet {self.table} ports {{ {port} }}"
        )

    async def release(self, port: int, uid: int) -> None:
        await self._nft(
            f"delete element inet {self.table} ports {{ {port} }}\n"
            f"delete element inet {self.table} allowed {{ {port} . {uid} }}"
        )

    async def _tables(self) -> list[str]:
        listed = await self._nft("list tables inet")
        return [
            line.split()[2]
            for line in listed.splitlines()
            if line.startswith("table inet ") and line.split()[2].startswith(PREFIX)
        ]

    async def _nft(self, script: str) -> str:
        """Run an nft script to its end, even when the caller is being cancelled (a port's
        rules must be gone before the port is handed out again)."""
        with trio.CancelScope(shield=True), trio.move_on_after(NFT_TIMEOUT) as timer:
            done = await trio.run_process(
                [self.nft, "-f", "-"],
                stdin=script.encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if timer.cancelled_caught:
            raise DynodError(f"nft took over {NFT_TIMEOUT:g} s: is nftables working?")
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip().splitlines()
            raise DynodError(f"nft failed: {error[0] if error else done.returncode}")
        return done.stdout.decode(errors="replace")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
