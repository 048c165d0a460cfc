"""The rendezvous' certificate authority in the data directory: `rendezvous-ca.pem` (what clients
trust for attached one-offs) and its key `rendezvous-ca-key.pem` (0600), made once and kept; and
the server certificate it signs for 127.0.0.1 at each start, loaded into an SSL context and never
kept. Blocking (files, key generation): callers run it in a worker thread."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from dynod.core import x509
from dynod.errors import Damaged
from dynod.state.files import atomic_write

CA_FILE = "rendezvous-ca.pem"
CA_KEY_FILE = "rendezvous-ca-key.pem"
CA_DAYS = 3650
RENEW_BEFORE = 30 * 86400  # a CA this close to its end is made anew
SERVER_DAYS = 825


def load_or_make_ca(data_dir: Path, now: float) -> x509.Issued:
    """The data directory's CA; a missing, damaged, mismatched or expiring one is made anew
    (the key first, so that a CA file never names a key that was not written)."""
    cert_path, key_path = data_dir / CA_FILE, data_dir / CA_KEY_FILE
    try:
        der = x509.from_pem(cert_path.read_text(), "CERTIFICATE")
        key = x509.EcKey.from_pem(key_path.read_text())
        if (
            x509.public_key_of(der) == key.public_bits()
            and x509.not_after(der) > now + RENEW_BEFORE
        ):
            if key_path.stat().st_mode & 0o077:
                key_path.chmod(0o600)  # someone loosened it: the key signs what clients trust
            return x509.Issued(der, key)
    except (OSError, ValueError, Damaged):
        pass
    ca = x509.make_ca(f"dynod rendezvous CA {os.urandom(4).hex()}", now, CA_DAYS)
    atomic_write(key_path, ca.key.to_pem().encode(), mode=0o600)
    atomic_write(cert_path, ca.pem.encode(), mode=0o644)
    return ca


def server_context(data_dir: Path, now: float, host: str = "127.0.0.1") -> ssl.SSLContext:
    """A TLS server context whose certificate for `host` the data directory's CA signed."""
    ca = load_or_make_ca(data_dir, now)
    issued = x509.issue_server(ca, now, SERVER_DAYS, ips=(host,), dns=("localhost",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 0  # one connection per session: tickets would only cost a round
    # ssl loads a key only from a file: a private one in the (0700) data directory, gone at once
    fd, name = tempfile.mkstemp(prefix=".rendezvous-", suffix=".pem", dir=data_dir)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(issued.pem + ca.pem + issued.key.to_pem())
        context.load_cert_chain(name)
    finally:
        os.unlink(name)
    return context
