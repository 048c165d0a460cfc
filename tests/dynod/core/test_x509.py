"""The hand-made X.509 certificates (dynod/core/x509.py): a CA and a server certificate it signs
are what Python's ssl (OpenSSL) accepts and verifies, in a real TLS handshake; OpenSSL's own
`verify -x509_strict` agrees; a forged or foreign chain is refused."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dynod.core import x509
from dynod.errors import Damaged

NOW = time.time()


def handshake(server: x509.Issued, chain: str, trusted: str, tmp_path: Path) -> bytes:
    """A TLS connection to 127.0.0.1 with `server`'s certificate (and `chain`), from a client
    that trusts only `trusted`: what the server sent."""
    (tmp_path / "server.pem").write_text(server.pem + chain + server.key.to_pem())
    (tmp_path / "trusted.pem").write_text(trusted)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(tmp_path / "server.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "trusted.pem"))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    ours, theirs = socket.socketpair()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            with serving.wrap_socket(ours, server_side=True) as tls:
                tls.sendall(b"hello over TLS")
        except (OSError, ssl.SSLError) as err:
            failures.append(err)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(theirs, server_hostname="127.0.0.1") as tls:
            return tls.recv(100)
    finally:
        ours.close()
        thread.join(10)


def test_a_server_certificate_signed_by_the_ca_passes_a_strict_handshake(tmp_path: Path) -> None:
    ca = x509.make_ca("dynod rendezvous CA test", NOW, 3650)
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.1",), dns=("localhost",))
    assert handshake(server, ca.pem, ca.pem, tmp_path) == b"hello over TLS"


def test_a_client_trusting_another_ca_refuses_it(tmp_path: Path) -> None:
    ca = x509.make_ca("dynod rendezvous CA one", NOW, 3650)
    other = x509.make_ca("dynod rendezvous CA one", NOW, 3650)  # same name, another key
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.1",))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, "", other.pem, tmp_path)


def test_a_certificate_for_another_address_is_refused(tmp_path: Path) -> None:
    ca = x509.make_ca("dynod rendezvous CA test", NOW, 3650)
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.2",))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, "", ca.pem, tmp_path)


def test_a_tampered_signature_is_refused(tmp_path: Path) -> None:
    ca = x509.make_ca("dynod rendezvous CA test", NOW, 3650)
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.1",))
    forged = x509.Issued(
        server.der.replace(b"dynod rendezvous 127", b"dynod rendezvouz 127"), server.key
    )
    with pytest.raises(ssl.SSLError):
        handshake(forged, "", ca.pem, tmp_path)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_verifies_the_chain_strictly(tmp_path: Path) -> None:
    ca = x509.make_ca("dynod rendezvous CA test", NOW, 3650)
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.1",))
    (tmp_path / "ca.pem").write_text(ca.pem)
    (tmp_path / "server.pem").write_text(server.pem)
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            tmp_path / "ca.pem",
            tmp_path / "server.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "key.pem").write_text(server.key.to_pem())
    done = subprocess.run(
        ["openssl", "ec", "-in", tmp_path / "key.pem", "-check", "-noout"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "valid" in done.stderr, done.stderr


def test_keys_and_validity_read_back() -> None:
    ca = x509.make_ca("dynod rendezvous CA test", NOW, 10)
    assert x509.on_curve(ca.key.public) and x509.on_curve(x509.G)
    assert x509.EcKey.from_pem(ca.key.to_pem()) == ca.key
    assert x509.public_key_of(ca.der) == ca.key.public_bits()
    assert abs(x509.not_after(ca.der) - (NOW + 10 * 86400)) < 2
    server = x509.issue_server(ca, NOW, 825, ips=("127.0.0.1",))  # never outlives its CA
    assert x509.not_after(server.der) <= x509.not_after(ca.der)
    late = x509.make_ca("dynod rendezvous CA 2050", 2_600_000_000.0, 10)  # GeneralizedTime
    assert abs(x509.not_after(late.der) - (2_600_000_000 + 10 * 86400)) < 2


def test_damaged_pem_is_a_one_line_error() -> None:
    with pytest.raises(Damaged):
        x509.EcKey.from_pem("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
    with pytest.raises(Damaged):
        x509.not_after(b"\x30\x03\x02\x01\x01")
    with pytest.raises(Damaged):
        x509.from_pem("no pem here", "CERTIFICATE")
