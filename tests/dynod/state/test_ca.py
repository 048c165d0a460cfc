"""The rendezvous CA in the data directory (dynod/state/ca.py): made once and kept, its key
private, made anew when damaged or near its end; the server context it signs is trusted by a
client that trusts `rendezvous-ca.pem` and nothing else."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

from dynod.core import x509
from dynod.state.ca import CA_FILE, CA_KEY_FILE, RENEW_BEFORE, load_or_make_ca, server_context


def test_the_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    first = load_or_make_ca(tmp_path, time.time())
    assert (tmp_path / CA_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / CA_FILE).read_text() == first.pem
    (tmp_path / CA_KEY_FILE).chmod(0o644)
    assert load_or_make_ca(tmp_path, time.time()) == first
    assert (tmp_path / CA_KEY_FILE).stat().st_mode & 0o777 == 0o600  # tightened again


def test_a_damaged_mismatched_or_expiring_ca_is_made_anew(tmp_path: Path) -> None:
    first = load_or_make_ca(tmp_path, time.time())
    (tmp_path / CA_FILE).write_text("garbage")
    second = load_or_make_ca(tmp_path, time.time())
    assert second != first
    (tmp_path / CA_KEY_FILE).write_text(x509.EcKey.generate().to_pem())  # not the CA's key
    third = load_or_make_ca(tmp_path, time.time())
    assert third not in (first, second)
    late = x509.not_after(third.der) - RENEW_BEFORE + 1
    assert load_or_make_ca(tmp_path, late) != third


def test_a_client_trusting_the_ca_file_completes_a_handshake(tmp_path: Path) -> None:
    context = server_context(tmp_path, time.time())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CA_FILE, CA_KEY_FILE]
    )  # no key left
    client = ssl.create_default_context(cafile=str(tmp_path / CA_FILE))
    ours, theirs = socket.socketpair()

    def serve() -> None:
        with context.wrap_socket(ours, server_side=True) as tls:
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with client.wrap_socket(theirs, server_hostname="127.0.0.1") as tls:
        assert tls.recv(10) == b"ok"
    thread.join(10)
