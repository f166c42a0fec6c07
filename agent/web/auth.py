"""Who may write through the web server: passwords, session cookies, CSRF tokens.

Theory of operation
-------------------
Two kinds of callers write (acknowledge an alert, record a service, set a lot):

* People, in the dashboard. They log in with a name and password from
  ``[[api.users]]``; the config holds only an scrypt hash
  (``coffee-telemetry hash-password`` makes one). A good login sets the
  session cookie: ``<user>.<expires, unix s>.<password fingerprint>.<MAC>``,
  MAC'd with a random key kept in ``data_dir/web-session.key`` (0600), so a
  session survives an agent restart and cannot be forged or extended. The
  fingerprint is a hash of the user's password hash: changing a password or
  removing the user ends their sessions. The cookie is ``HttpOnly`` (scripts
  cannot read it) and ``SameSite=Strict``.

  A browser attaches cookies to requests other sites make it send, so a
  cookie alone never authorises a write: every write also carries the CSRF
  token in the ``X-CSRF-Token`` header. The token is a MAC of the cookie
  (bound to the session, nothing stored on the server); the page learns it
  from ``GET /api/session``, which another site's script cannot read
  (same-origin policy). Writes from another origin are refused on their
  ``Origin``/``Sec-Fetch-Site`` headers before that, as a second wall.

* Programs, with ``Authorization: Bearer <token>`` (``[api] token_env``).
  A browser never adds that header on its own, so a forged cross-site
  request cannot carry it: bearer requests need no CSRF token.

Passwords are checked on a worker thread (scrypt takes ~50 ms and 16 MiB by
design) and in constant time whether or not the user exists; after
``MAX_FAILURES`` wrong passwords from one address in ``FAILURE_WINDOW_S`` that
address gets 429 until the window has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.config import WebUserConfig

#: scrypt cost: n = 2**14, r = 8, p = 1 (16 MiB, ~50 ms on a Raspberry Pi 4).
SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1

SESSION_COOKIE = "ct_session"
CSRF_HEADER = "X-CSRF-Token"

MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
#: Addresses remembered for throttling (oldest forgotten first): memory stays bounded.
MAX_TRACKED_ADDRESSES = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The ``password_hash`` to put in ``[[api.users]]`` for ``password``."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=2**SCRYPT_LOG2_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (a ``hash_password`` result)."""
    try:
        scheme, log2_n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=2 ** int(log2_n),
            r=int(r),
            p=int(p),
            maxmem=256 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def load_session_key(path: Path) -> bytes:
    """The MAC key for sessions: read from ``path``, or created there (0600)."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return key


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user.

    Attributes:
        user: The user's name.
        expires_s: Unix time the session ends.
        cookie: The cookie value (what the CSRF token is bound to).
    """

    user: str
    expires_s: int
    cookie: str


class Auth:
    """Checks logins, issues and reads session cookies, makes and checks CSRF tokens.

    Args:
        users: The configured users.
        key: MAC key (``load_session_key``).
        session_s: How long a session lasts.
        clock_s: Wall clock, unix seconds (tests pass a fake).
    """

    def __init__(
        self,
        users: Sequence[WebUserConfig],
        *,
        key: bytes,
        session_s: float,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._users = {u.name: u.password_hash for u in users}
        self._key = key
        self._session_s = session_s
        self._clock_s = clock_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        # Checked when the user does not exist, so that answer takes as long as a wrong password.
        self._dummy = hash_password(secrets.token_urlsafe(16))

    @property
    def login_enabled(self) -> bool:
        """Whether any user is configured."""
        return bool(self._users)

    def _mac(self, purpose: str, text: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\n{text}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _fingerprint(self, user: str) -> str:
        return self._mac("password", self._users[user])[:16]

    # -- login -----------------------------------------------------------------------

    def throttled(self, address: str) -> bool:
        """Whether ``address`` has used up its wrong passwords for now."""
        now = self._clock_s()
        recent = [t for t in self._failures.get(address, ()) if now - t < FAILURE_WINDOW_S]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        return len(recent) >= MAX_FAILURES

    def check_password(self, user: str, password: str) -> bool:
        """Whether ``user`` exists and ``password`` is theirs (blocking: run on a thread)."""
        encoded = self._users.get(user)
        ok = verify_password(password, encoded if encoded is not None else self._dummy)
        return ok and encoded is not None

    def record_failure(self, address: str) -> None:
        """Count a wrong password from ``address``."""
        self._failures.setdefault(address, []).append(self._clock_s())
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)

    def clear_failures(self, address: str) -> None:
        """Forget ``address``'s wrong passwords (after a good login)."""
        self._failures.pop(address, None)

    # -- sessions --------------------------------------------------------------------

    def issue(self, user: str) -> Session:
        """A new session for ``user`` (who must exist)."""
        expires = int(self._clock_s() + self._session_s)
        body = f"{user}.{expires}.{self._fingerprint(user)}"
        return Session(user=user, expires_s=expires, cookie=f"{body}.{self._mac('session', body)}")

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value stands for, if it is genuine, current and its user valid."""
        if not cookie or len(cookie) > 512:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        user, expires, fingerprint = [*body.split("."), "", ""][:3]
        if user not in self._users or not hmac.compare_digest(
            fingerprint.encode(), self._fingerprint(user).encode()
        ):
            return None
        try:
            expires_s = int(expires)
        except ValueError:  # pragma: no cover - the MAC vouches for what we wrote
            return None
        if expires_s <= self._clock_s():
            return None
        return Session(user=user, expires_s=expires_s, cookie=cookie)

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of ``session`` (sent by the page in ``X-CSRF-Token``)."""
        return self._mac("csrf", session.cookie)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is ``session``'s CSRF token."""
        return bool(token) and hmac.compare_digest(
            (token or "").encode(), self.csrf_token(session).encode()
        )
