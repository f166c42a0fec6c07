"""Password hashes: the one place that knows their formats, costs and limits.

Dashboard users (``[[api.users]]``) are stored as a hash, never a password.
New hashes are Argon2id with OWASP's parameters for a memory-limited server
(Password Storage Cheat Sheet: m = 19 MiB, t = 2, p = 1), made by
``argon2-cffi``; one takes 19 MiB and about 35 ms on the development VM (a Pi's
cores are several times slower)::

    $argon2id$v=19$m=19456,t=2,p=1$<salt, base64>$<hash, base64>

Hashes made before (scrypt, ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>``) still
verify; ``needs_rehash`` says so, and the web server replaces one at the
user's next good login (``agent.web.auth``).

Every hash costs memory while it is checked, and the agent runs under a
``MemoryMax``: a hash whose parameters ask for more than ``MAX_HASH_MEMORY``
bytes, or more time or lanes than the limits below, is one the verifier will
not check. ``hash_problem`` says why, and the config refuses such a hash at
load (``coffee-telemetry check-config``), instead of the login failing for
ever after.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "ARGON2_MEMORY_KIB",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "MAX_HASH_MEMORY",
    "HashCost",
    "dummy_hash",
    "hash_cost",
    "hash_password",
    "hash_problem",
    "needs_rehash",
    "verify_password",
]

#: Argon2id memory in KiB (OWASP: 19 MiB).
ARGON2_MEMORY_KIB = 19456
#: Argon2id passes over the memory (OWASP: 2).
ARGON2_TIME_COST = 2
#: Argon2id lanes (OWASP: 1; more lanes would want more cores than a Pi spares).
ARGON2_PARALLELISM = 1
#: Most memory one hash may take to check: four times today's, a bound a 256 MiB unit holds.
MAX_HASH_MEMORY = 64 * 1024 * 1024
#: Most Argon2 passes, and lanes, the verifier accepts (time is bounded as well as memory).
MAX_ARGON2_TIME_COST = 10
MAX_ARGON2_PARALLELISM = 4

_HASHER = PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_KIB,
    parallelism=ARGON2_PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)
_SCRYPT = re.compile(
    r"^scrypt\$(?P<log2n>\d{1,2})\$(?P<r>\d{1,2})\$(?P<p>\d{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]{16,}={0,2})\$(?P<key>[A-Za-z0-9+/]{40,}={0,2})$"
)
_ARGON2ID = re.compile(r"^\$argon2id\$v=19\$m=\d{1,8},t=\d{1,3},p=\d{1,3}\$[A-Za-z0-9+/]{16,}\$")


@dataclass(frozen=True, slots=True)
class HashCost:
    """What checking a hash costs.

    Attributes:
        scheme: ``argon2id`` or ``scrypt``.
        memory_bytes: Memory one check takes.
        passes: Argon2 passes (1 for scrypt: its cost is all in ``memory_bytes``).
        lanes: Argon2 lanes, or scrypt's ``p``.
    """

    scheme: str
    memory_bytes: int
    passes: int
    lanes: int


def _scrypt_memory(n: int, r: int, p: int) -> int:
    # OpenSSL's EVP_PBE_scrypt: B is 128 r p bytes, V is 128 r (N + 2) (its X and T included).
    return 128 * r * p + 128 * r * (n + 2)


def hash_cost(encoded: str) -> HashCost | None:
    """What checking ``encoded`` would cost, or None if it is not a hash this module reads."""
    if (m := _SCRYPT.match(encoded)) is not None:
        log2n, r, p = int(m["log2n"]), int(m["r"]), int(m["p"])
        if not (1 <= log2n <= 40 and r >= 1 and p >= 1):
            return None
        return HashCost("scrypt", _scrypt_memory(2**log2n, r, p), 1, p)
    if _ARGON2ID.match(encoded):
        try:
            params = extract_parameters(encoded)
        except (InvalidHashError, ValueError):
            return None
        return HashCost("argon2id", params.memory_cost * 1024, params.time_cost, params.parallelism)
    return None


def hash_problem(encoded: str) -> str | None:
    """Why the verifier will not check ``encoded`` (None: it will).

    The answer never quotes ``encoded``: a password pasted by mistake must not reach a log.
    """
    cost = hash_cost(encoded)
    if cost is None:
        return (
            "not a password hash: run `coffee-telemetry hash-password` and paste the line it prints"
        )
    if cost.memory_bytes > MAX_HASH_MEMORY:
        return (
            f"this {cost.scheme} hash needs {cost.memory_bytes / 2**20:.0f} MiB to check, more"
            f" than the {MAX_HASH_MEMORY // 2**20} MiB the agent allows: make a new one with"
            " `coffee-telemetry hash-password`"
        )
    if cost.passes > MAX_ARGON2_TIME_COST or cost.lanes > MAX_ARGON2_PARALLELISM:
        return (
            f"this {cost.scheme} hash asks for more passes or lanes than the agent allows"
            f" (at most t={MAX_ARGON2_TIME_COST}, p={MAX_ARGON2_PARALLELISM}): make a new one"
            " with `coffee-telemetry hash-password`"
        )
    return None


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` with the parameters above (blocking, tens of ms).

    Raises:
        ValueError: The password is empty.
    """
    if not password:
        raise ValueError("the password is empty")
    return _HASHER.hash(password)


def _verify_scrypt(password: str, encoded: str) -> bool:
    m = _SCRYPT.match(encoded)
    if m is None:
        return False
    expected = base64.b64decode(m["key"], validate=True)
    n, r, p = 2 ** int(m["log2n"]), int(m["r"]), int(m["p"])
    got = hashlib.scrypt(
        password.encode("utf-8"),
        salt=base64.b64decode(m["salt"], validate=True),
        n=n,
        r=r,
        p=p,
        maxmem=_scrypt_memory(n, r, p) + 1024 * 1024,
        dklen=len(expected),
    )
    return hmac.compare_digest(got, expected)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (blocking; run it on the hashing thread).

    A hash the verifier will not check (``hash_problem``) never matches, and is never
    computed: its cost is refused before any memory is taken.
    """
    if hash_problem(encoded) is not None:
        return False
    try:
        if encoded.startswith("scrypt$"):
            return _verify_scrypt(password, encoded)
        return _HASHER.verify(encoded, password)
    except (VerificationError, InvalidHashError, ValueError, TypeError, MemoryError):
        return False


def needs_rehash(encoded: str) -> bool:
    """Whether ``encoded`` is weaker or older than a hash made now (scrypt, other parameters)."""
    if not encoded.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True


def dummy_hash() -> str:
    """A valid hash of a random password, checked for unknown users so they cost the same."""
    return _DUMMY


_DUMMY = (
    "$argon2id$v=19$m=19456,t=2,p=1$"
    + base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    + "$"
    + base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
)
