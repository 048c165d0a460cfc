"""X.509 certificates without a crypto package: ECDSA P-256 keys, DER written and read by hand,
a CA and the server certificates it signs (the rendezvous' TLS, README "Attached one-offs").
Pure computation: the time is given, randomness comes from `secrets`; files are the caller's."""

from __future__ import annotations

import base64
import calendar
import hashlib
import ipaddress
import secrets
import time

import attrs

from dynod.errors import Damaged

# ----- the P-256 curve (FIPS 186-4, D.1.2.3): y² = x³ - 3x + b over GF(p), order n

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)

Jacobian = tuple[int, int, int]  # (X, Y, Z): the affine point (X/Z², Y/Z³); Z = 0 is infinity
INFINITY: Jacobian = (1, 1, 0)


def _double(q: Jacobian) -> Jacobian:
    x, y, z = q
    if z == 0 or y == 0:
        return INFINITY
    delta, gamma = z * z % P, y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P  # a = -3
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) ** 2 - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add(q: Jacobian, r: Jacobian) -> Jacobian:
    if q[2] == 0:
        return r
    if r[2] == 0:
        return q
    x1, y1, z1 = q
    x2, y2, z2 = r
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(q) if s1 == s2 else INFINITY
    h = (u2 - u1) % P
    i = 4 * h * h % P
    j = h * i % P
    rr = 2 * (s2 - s1) % P
    v = u1 * i % P
    x3 = (rr * rr - j - 2 * v) % P
    y3 = (rr * (v - x3) - 2 * s1 * j) % P
    z3 = ((z1 + z2) ** 2 - z1z1 - z2z2) * h % P
    return x3, y3, z3


def multiply(k: int, point: tuple[int, int] = G) -> tuple[int, int]:
    """k·point in affine coordinates (k in [1, n-1])."""
    result, addend = INFINITY, (point[0], point[1], 1)
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _double(addend)
        k >>= 1
    x, y, z = result
    if z == 0:
        raise ValueError("the point at infinity has no affine coordinates")
    zinv = pow(z, -1, P)
    return x * zinv * zinv % P, y * zinv * zinv * zinv % P


def on_curve(point: tuple[int, int]) -> bool:
    x, y = point
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


@attrs.frozen
class EcKey:
    """A P-256 private key `d` and its public point."""

    d: int
    public: tuple[int, int]

    @classmethod
    def generate(cls) -> EcKey:
        d = secrets.randbelow(N - 1) + 1
        return cls(d, multiply(d))

    def public_bits(self) -> bytes:
        """The uncompressed point, as SubjectPublicKeyInfo carries it."""
        return b"\x04" + self.public[0].to_bytes(32, "big") + self.public[1].to_bytes(32, "big")

    def sign(self, message: bytes) -> bytes:
        """ECDSA with SHA-256: the DER `SEQUENCE { r, s }`."""
        e = int.from_bytes(hashlib.sha256(message).digest(), "big")
        while True:
            k = secrets.randbelow(N - 1) + 1
            r = multiply(k)[0] % N
            s = pow(k, -1, N) * (e + r * self.d) % N
            if r and s:
                return _seq(_int(r), _int(s))

    def to_pem(self) -> str:
        """SEC 1 `EC PRIVATE KEY`, as OpenSSL writes and reads it."""
        der = _seq(
            _int(1),
            _tlv(0x04, self.d.to_bytes(32, "big")),
            _tlv(0xA0, _oid(PRIME256V1)),
            _tlv(0xA1, _bits(self.public_bits())),
        )
        return pem("EC PRIVATE KEY", der)

    @classmethod
    def from_pem(cls, text: str) -> EcKey:
        fields = _children(_unwrap(from_pem(text, "EC PRIVATE KEY"), 0x30))
        if len(fields) < 2 or fields[0] != (0x02, b"\x01") or fields[1][0] != 0x04:
            raise Damaged("not a P-256 EC PRIVATE KEY")
        d = int.from_bytes(fields[1][1], "big")
        if not 0 < d < N:
            raise Damaged("a P-256 key out of range")
        return cls(d, multiply(d))


@attrs.frozen
class Issued:
    """A certificate (DER) with its key."""

    der: bytes
    key: EcKey

    @property
    def pem(self) -> str:
        return pem("CERTIFICATE", self.der)


# ----- the certificates

ECDSA_SHA256 = "1.2.840.10045.4.3.2"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
PRIME256V1 = "1.2.840.10045.3.1.7"
COMMON_NAME = "2.5.4.3"
ORGANIZATION = "2.5.4.10"
SUBJECT_KEY_ID, KEY_USAGE, SUBJECT_ALT_NAME = "2.5.29.14", "2.5.29.15", "2.5.29.17"
BASIC_CONSTRAINTS, AUTHORITY_KEY_ID, EXT_KEY_USAGE = "2.5.29.19", "2.5.29.35", "2.5.29.37"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
SKEW = 3600  # certificates start an hour early: clocks differ


def make_ca(name: str, now: float, days: int) -> Issued:
    """A self-signed CA that can sign server certificates (and no further CAs)."""
    key = EcKey.generate()
    subject = _name(name)
    extensions = [
        _extension(BASIC_CONSTRAINTS, _seq(_tlv(0x01, b"\xff"), _int(0)), critical=True),
        _extension(KEY_USAGE, _tlv(0x03, b"\x01\x06"), critical=True),  # keyCertSign, cRLSign
        _extension(SUBJECT_KEY_ID, _tlv(0x04, _key_id(key))),
        _extension(AUTHORITY_KEY_ID, _seq(_tlv(0x80, _key_id(key)))),
    ]
    return Issued(_certificate(subject, subject, key, key, now, days, extensions), key)


def issue_server(
    ca: Issued, now: float, days: int, *, ips: tuple[str, ...], dns: tuple[str, ...] = ()
) -> Issued:
    """A TLS server certificate for these addresses, signed by `ca`, valid no longer than it."""
    key = EcKey.generate()
    days = max(1, min(days, int((not_after(ca.der) - now) // 86400)))
    names = [_tlv(0x87, ipaddress.ip_address(ip).packed) for ip in ips]
    names += [_tlv(0x82, host.encode("ascii")) for host in dns]
    extensions = [
        _extension(BASIC_CONSTRAINTS, _seq(), critical=True),
        _extension(KEY_USAGE, _tlv(0x03, b"\x07\x80"), critical=True),  # digitalSignature
        _extension(EXT_KEY_USAGE, _seq(_oid(SERVER_AUTH))),
        _extension(SUBJECT_ALT_NAME, _seq(*names)),
        _extension(SUBJECT_KEY_ID, _tlv(0x04, _key_id(key))),
        _extension(AUTHORITY_KEY_ID, _seq(_tlv(0x80, _key_id(ca.key)))),
    ]
    subject = _name(f"dynod rendezvous {ips[0] if ips else dns[0]}")
    der = _certificate(subject, subject_of(ca.der), key, ca.key, now, days, extensions)
    return Issued(der, key)


def _certificate(
    subject: bytes,
    issuer: bytes,
    key: EcKey,
    signer: EcKey,
    now: float,
    days: int,
    extensions: list[bytes],
) -> bytes:
    algorithm = _seq(_oid(ECDSA_SHA256))
    tbs = _seq(
        _tlv(0xA0, _int(2)),  # v3
        _int(secrets.randbits(127) | 1 << 126),  # positive, 16 bytes
        algorithm,
        issuer,
        _seq(_time(now - SKEW), _time(now + days * 86400)),
        subject,
        _seq(_seq(_oid(EC_PUBLIC_KEY), _oid(PRIME256V1)), _bits(key.public_bits())),
        _tlv(0xA3, _seq(*extensions)),
    )
    return _seq(tbs, algorithm, _bits(signer.sign(tbs)))


def _key_id(key: EcKey) -> bytes:
    return hashlib.sha1(key.public_bits()).digest()  # RFC 5280 4.2.1.2, method (1)


def _name(common_name: str) -> bytes:
    def rdn(oid: str, value: str) -> bytes:
        return _tlv(0x31, _seq(_oid(oid), _tlv(0x0C, value.encode())))

    return _seq(rdn(ORGANIZATION, "dynod"), rdn(COMMON_NAME, common_name))


def _extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = _tlv(0x01, b"\xff") if critical else b""
    return _seq(_oid(oid), flag, _tlv(0x04, value))


def _time(when: float) -> bytes:
    text = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(when))
    if int(text[:4]) < 2050:
        return _tlv(0x17, text[2:].encode())  # UTCTime
    return _tlv(0x18, text.encode())  # GeneralizedTime


# ----- reading back what we wrote (a CA kept in the data directory)


def _tbs_fields(der: bytes) -> list[tuple[int, bytes]]:
    certificate = _children(_unwrap(der, 0x30))
    if len(certificate) != 3:
        raise Damaged("not an X.509 certificate")
    tag, tbs = certificate[0]
    fields = _children(tbs) if tag == 0x30 else []
    if len(fields) < 7 or fields[0][0] != 0xA0:
        raise Damaged("not an X.509 v3 certificate")
    return fields


def subject_of(der: bytes) -> bytes:
    tag, content = _tbs_fields(der)[5]
    return _tlv(tag, content)


def not_after(der: bytes) -> float:
    """The end of a certificate's validity, in seconds since the epoch."""
    tag, validity = _tbs_fields(der)[4]
    (_, _), (kind, raw) = _children(validity)
    text = raw.decode("ascii")
    if kind == 0x17:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    return float(calendar.timegm(time.strptime(text, "%Y%m%d%H%M%SZ")))


def public_key_of(der: bytes) -> bytes:
    """The uncompressed EC point a certificate carries."""
    _, spki = _tbs_fields(der)[6]
    (_, _), (_, bits) = _children(spki)
    return bits[1:]


# ----- DER


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _bits(data: bytes) -> bytes:
    return _tlv(0x03, b"\x00" + data)


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray()
    for value in [parts[0] * 40 + parts[1], *parts[2:]]:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | value & 0x7F)
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _read(data: bytes, at: int) -> tuple[int, bytes, int]:
    """The TLV at `at`: its tag, its content and where the next one starts."""
    if at + 2 > len(data):
        raise Damaged("DER cut short")
    tag, first = data[at], data[at + 1]
    at += 2
    if first & 0x80:
        count = first & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise Damaged("bad DER length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    else:
        length = first
    if at + length > len(data):
        raise Damaged("DER cut short")
    return tag, data[at : at + length], at + length


def _unwrap(data: bytes, tag: int) -> bytes:
    found, content, end = _read(data, 0)
    if found != tag or end != len(data):
        raise Damaged(f"expected DER tag {tag:#x}")
    return content


def _children(data: bytes) -> list[tuple[int, bytes]]:
    items, at = [], 0
    while at < len(data):
        tag, content, at = _read(data, at)
        items.append((tag, content))
    return items


def pem(label: str, der: bytes) -> str:
    text = base64.b64encode(der).decode()
    body = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def from_pem(text: str, label: str) -> bytes:
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise Damaged(f"no {label} in the PEM text")
    try:
        return base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
    except ValueError:
        raise Damaged(f"the {label} is not valid base64") from None
