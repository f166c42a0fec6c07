"""Who may write through the web server: logins, lockouts, sessions, CSRF, API tokens.

Theory of operation
-------------------
Two kinds of callers write (acknowledge an alert, record a service, set a lot):

* **People**, in the dashboard. They log in with a name and password from
  ``[[api.users]]``; the config holds only a hash (``agent.passwords``:
  Argon2id, ``coffee-telemetry hash-password``).

* **Programs**, with ``Authorization: Bearer <token>`` (``[api] token_env`` is
  the token named ``api``; ``[[api.tokens]]`` adds more). A browser never adds
  that header on its own, so a forged cross-site request cannot carry it:
  bearer requests need no CSRF token. A write is recorded as ``token:<name>``.

**Counting before hashing.** A password check costs 19 MiB and tens of milliseconds
of CPU, on purpose, so a guess must be counted *before* its hash is computed:
``LoginGuard.begin`` charges the attempt as a failure at once, and a good
password takes the charge back. A hundred guesses sent in parallel from one
address then cost five hashes, not a hundred: the sixth arrives to a count that
is already at the limit. Hashes are computed on one worker thread
(``PasswordWorker``), one at a time, so two logins in flight hold at most one
hash's memory; past ``MAX_WAITING_HASHES`` waiting logins, more answer 503 at
once rather than queueing (the pages and the JSON API never wait behind them).

**Lockout, by user and by address.** Behind a proxy, or in a warehouse where
everyone shares one NAT address, locking an *address* locks out everyone
there; locking a *user* lets a stranger lock the real user out. So:

1. A (user, address) pair is locked after ``PAIR_LIMIT`` (5) wrong passwords
   in ``FAILURE_WINDOW_S`` (5 min): a flood from one address stops at 5, and
   the same user from any other address is not affected.
2. A user is locked after ``USER_LIMIT`` (20) wrong passwords from all
   addresses together, but only for addresses that never logged in as that
   user (``KNOWN_ADDRESS_S``, 30 days): a guesser spreading over many
   addresses stops at 20, and the user's own desk still gets in.
3. An address is locked after ``ADDRESS_LIMIT`` (20) wrong passwords for any
   users (someone trying many names), again except for the users that
   logged in from it before.

Names that are not configured share one counter per address (``?``), so
made-up names cannot grow the tables; every table is bounded, oldest entries
forgotten first. A locked attempt answers 429 with ``Retry-After`` and costs
no hash. Wrong API tokens are counted per address too: after
``TOKEN_FAILURES`` (5) in the window, that address's bearer requests answer
429 without being compared. Failures and lockouts are logged, at most 10
lines a minute (the rest counted, in ``GET /api/web``).

**Sessions.** A good login sets the session cookie
``<user>.<expires, unix s>.<epoch>.<password fingerprint>.<MAC>``, MAC'd with
a random key kept in the session store (``data_dir/web-auth.json``, 0600), so
a session survives an agent restart and cannot be forged or extended. It lasts
``[api] session_hours`` (at most 30 days). The store also keeps a per-user
*epoch*, written into every cookie: logging out raises the user's epoch, which
ends every session of that user everywhere, copied cookies included. The
fingerprint is a MAC of the user's configured password hash: a new hash in
``site.toml`` (a changed password) or removing the user ends their sessions
too. Losing the store file ends every session (a new key is made).

The cookie is ``HttpOnly`` (scripts cannot read it) and ``SameSite=Strict``.
A browser attaches cookies to requests other sites make it send, so a cookie
alone never authorises a write: every write also carries the CSRF token in the
``X-CSRF-Token`` header. The token is a MAC of the cookie (bound to the
session, nothing stored on the server); the page learns it from ``GET
/api/session``, which another site's script cannot read (same-origin policy).
Writes from another origin are refused on their ``Origin``/``Sec-Fetch-Site``
headers before that, as a second wall (``agent.web.server``).

**Old hashes.** A user whose configured hash is scrypt (or Argon2 with older
parameters) still logs in; after a good login the password is hashed again
with today's parameters and the new hash is kept in the session store, where
it takes precedence over the configured one for as long as the configured one
is unchanged. The agent never rewrites ``site.toml``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from coffee_telemetry.agent.commands import RefusalLog
from coffee_telemetry.agent.config import WebUserConfig
from coffee_telemetry.agent.passwords import (
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)

__all__ = [
    "ADDRESS_LIMIT",
    "CSRF_HEADER",
    "FAILURE_WINDOW_S",
    "PAIR_LIMIT",
    "SESSION_COOKIE",
    "TOKEN_FAILURES",
    "USER_LIMIT",
    "Auth",
    "AuthStore",
    "Busy",
    "Locked",
    "LoginGuard",
    "PasswordWorker",
    "Session",
    "TokenCheck",
    "hash_password",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = "ct_session"
CSRF_HEADER = "X-CSRF-Token"

#: Wrong passwords for one user from one address before that pair is locked.
PAIR_LIMIT = 5
#: Wrong passwords for one user from all addresses before the user is locked (see above).
USER_LIMIT = 20
#: Wrong passwords from one address for any users before the address is locked.
ADDRESS_LIMIT = 20
#: How long a wrong password counts.
FAILURE_WINDOW_S = 300.0
#: How long an address where a user logged in stays exempt from user and address locks.
KNOWN_ADDRESS_S = 30 * 86400.0
#: Addresses remembered per user as known good.
KNOWN_PER_USER = 32
#: (user, address) pairs and addresses remembered for counting; oldest forgotten first.
MAX_TRACKED_PAIRS = 4096
MAX_TRACKED_ADDRESSES = 1024
#: Wrong API tokens from one address before its bearer requests are refused unread.
TOKEN_FAILURES = 5
#: Logins waiting for (or in) the password worker; more answer 503 at once.
MAX_WAITING_HASHES = 8
#: Longest user name and password looked at (longer ones are wrong, and cost no hash).
MAX_USER_CHARS = 64
MAX_PASSWORD_BYTES = 1024

_T = TypeVar("_T")
_K = TypeVar("_K")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# -- the session store ---------------------------------------------------------------


@dataclass(slots=True)
class _UserState:
    epoch: int = 0
    #: A hash made at a login, replacing the configured one while that one is ``replaces``.
    upgraded_hash: str | None = None
    replaces: str | None = None


class AuthStore:
    """The session key, each user's session epoch and upgraded hashes; one 0600 JSON file.

    Changes are made in memory at once (a logout takes effect for the next request) and
    written by ``save`` (blocking: call it on a thread), atomically.

    Args:
        key: The MAC key of session cookies.
        path: Where the store is kept; None keeps it in memory only (tests).
    """

    def __init__(self, key: bytes, *, path: Path | None = None) -> None:
        self.key = key
        self.path = path
        self._users: dict[str, _UserState] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> AuthStore:
        """Read the store at ``path``, or start one there (a new key: every session ends).

        A ``web-session.key`` beside it (the key file of earlier releases) is adopted,
        so an upgrade does not log everyone out.
        """
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            key = base64.b64decode(doc["key"], validate=True)
            if len(key) < 32:
                raise ValueError("key too short")
            store = cls(key, path=path)
            for name, state in dict(doc.get("users", {})).items():
                store._users[str(name)] = _UserState(
                    epoch=int(state.get("epoch", 0)),
                    upgraded_hash=state.get("upgraded_hash"),
                    replaces=state.get("replaces"),
                )
            return store
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("Session store %s unreadable (%s): starting a new one", path, exc)
        key = b""
        with contextlib.suppress(OSError):
            key = path.with_name("web-session.key").read_bytes()
        store = cls(key if len(key) >= 32 else secrets.token_bytes(32), path=path)
        store.save()
        return store

    def epoch(self, user: str) -> int:
        """The user's current session epoch."""
        state = self._users.get(user)
        return 0 if state is None else state.epoch

    def end_sessions(self, user: str) -> None:
        """End every session of ``user`` (their cookies carry the old epoch)."""
        self._users.setdefault(user, _UserState()).epoch += 1

    def upgraded_hash(self, user: str, replaces: str) -> str | None:
        """The hash kept for ``user`` if it replaces the configured hash ``replaces``."""
        state = self._users.get(user)
        if state is None or state.upgraded_hash is None or state.replaces != replaces:
            return None
        return state.upgraded_hash

    def set_upgraded_hash(self, user: str, replaces: str, encoded: str) -> None:
        """Keep ``encoded`` for ``user`` while the configured hash is ``replaces``."""
        state = self._users.setdefault(user, _UserState())
        state.upgraded_hash, state.replaces = encoded, replaces

    def save(self) -> None:
        """Write the store (blocking: fsync and rename); a no-op in memory."""
        if self.path is None:
            return
        with self._lock:
            doc = {
                "key": base64.b64encode(self.key).decode("ascii"),
                "users": {name: asdict(state) for name, state in sorted(self._users.items())},
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)


# -- counting wrong passwords --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Locked:
    """A login refused before its hash: too many wrong passwords.

    Attributes:
        retry_after_s: When the oldest counted failure stops counting.
        scope: What is locked: ``pair`` (this user from this address), ``user`` or
            ``address``.
    """

    retry_after_s: float
    scope: str


@dataclass(frozen=True, slots=True)
class _Attempt:
    user: str | None
    address: str
    at: float


def _recent(times: list[float], now: float) -> list[float]:
    return [t for t in times if now - t < FAILURE_WINDOW_S]


class LoginGuard:
    """Counts login attempts before they are checked; decides lockouts (see the module doc).

    Args:
        users: The configured user names (others share one counter per address).
        clock_s: Monotonic seconds.
    """

    def __init__(self, users: Sequence[str], *, clock_s: Callable[[], float]) -> None:
        self._clock_s = clock_s
        self._users: dict[str, list[float]] = {u: [] for u in users}
        self._pairs: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._addresses: OrderedDict[str, list[float]] = OrderedDict()
        self._known: dict[str, OrderedDict[str, float]] = {u: OrderedDict() for u in users}

    def _known_at(self, user: str | None, address: str, now: float) -> bool:
        if user is None:
            return False
        last = self._known[user].get(address)
        return last is not None and now - last < KNOWN_ADDRESS_S

    @staticmethod
    def _touch(table: OrderedDict[_K, list[float]], key: _K, now: float, bound: int) -> list[float]:
        times = _recent(table.get(key, []), now)
        table[key] = times
        table.move_to_end(key)
        while len(table) > bound:
            table.popitem(last=False)
        return times

    def begin(self, user: str, address: str) -> _Attempt | Locked:
        """Charge an attempt by ``user`` from ``address``, or say why it is locked out."""
        now = self._clock_s()
        known_user = user if user in self._users else None
        pair = self._touch(self._pairs, (known_user or "?", address), now, MAX_TRACKED_PAIRS)
        addr = self._touch(self._addresses, address, now, MAX_TRACKED_ADDRESSES)
        if len(pair) >= PAIR_LIMIT:
            return Locked(pair[0] + FAILURE_WINDOW_S - now, "pair")
        if not self._known_at(known_user, address, now):
            if known_user is not None:
                fails = self._users[known_user] = _recent(self._users[known_user], now)
                if len(fails) >= USER_LIMIT:
                    return Locked(fails[0] + FAILURE_WINDOW_S - now, "user")
            if len(addr) >= ADDRESS_LIMIT:
                return Locked(addr[0] + FAILURE_WINDOW_S - now, "address")
        pair.append(now)
        addr.append(now)
        if known_user is not None:
            self._users[known_user].append(now)
        return _Attempt(known_user, address, now)

    def cancel(self, attempt: _Attempt) -> None:
        """Take back the charge of an attempt that was not checked after all."""
        for times in (
            self._pairs.get((attempt.user or "?", attempt.address), []),
            self._users.get(attempt.user or "", []),
            self._addresses.get(attempt.address, []),
        ):
            if attempt.at in times:
                times.remove(attempt.at)

    def succeeded(self, attempt: _Attempt) -> None:
        """Take back the charge of a good login; remember its address for its user."""
        assert attempt.user is not None
        self.cancel(attempt)
        self._pairs.pop((attempt.user, attempt.address), None)
        known = self._known[attempt.user]
        known[attempt.address] = attempt.at
        known.move_to_end(attempt.address)
        while len(known) > KNOWN_PER_USER:
            known.popitem(last=False)


# -- the password worker -------------------------------------------------------------


class Busy(Exception):
    """Too many logins are waiting for the password worker."""


class PasswordWorker:
    """One thread that computes every password hash, one at a time.

    Args:
        max_waiting: Calls waiting or running at once; ``run`` raises ``Busy`` past it.
    """

    def __init__(self, *, max_waiting: int = MAX_WAITING_HASHES) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="password-hash"
        )
        self._max_waiting = max_waiting
        self._pending = 0
        self._lock = threading.Lock()
        #: Hashes computed since start.
        self.computed = 0

    @property
    def pending(self) -> int:
        """Calls waiting or running now (a cancelled caller's call still counts until done)."""
        return self._pending

    def _done(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(*args)`` on the worker thread.

        Raises:
            Busy: ``max_waiting`` calls are waiting or running already.
        """
        with self._lock:
            if self._pending >= self._max_waiting:
                raise Busy
            self._pending += 1

        def counted() -> _T:
            self.computed += 1
            return fn(*args)

        future = self._executor.submit(counted)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop taking calls (what is running finishes on its own)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- sessions ------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What an ``Authorization: Bearer`` header proved.

    Attributes:
        name: The token's name when it is right.
        locked: The address sent too many wrong tokens (nothing was compared).
    """

    name: str | None = None
    locked: bool = False


@dataclass(slots=True)
class AuthStats:
    """Logins and token checks since start (``GET /api/web``)."""

    logins_ok: int = 0
    logins_wrong: int = 0
    logins_locked: int = 0
    logins_busy: int = 0
    logouts: int = 0
    hashes_upgraded: int = 0
    tokens_ok: int = 0
    tokens_wrong: int = 0
    tokens_locked: int = 0
    locked_by: dict[str, int] = field(default_factory=dict)


class Auth:
    """Checks logins and tokens, issues and reads session cookies, makes CSRF tokens.

    Args:
        users: The configured users.
        store: The session store (key, epochs, upgraded hashes).
        session_s: How long a session lasts.
        tokens: API tokens by name.
        clock_s: Wall clock, unix seconds (cookie expiry).
        monotonic_s: Monotonic clock (lockout windows).
        worker: Where hashes are computed (default: a thread of its own).
    """

    def __init__(
        self,
        users: Sequence[WebUserConfig],
        *,
        store: AuthStore,
        session_s: float,
        tokens: Mapping[str, str] | None = None,
        clock_s: Callable[[], float] = time.time,
        monotonic_s: Callable[[], float] = time.monotonic,
        worker: PasswordWorker | None = None,
    ) -> None:
        self._users = {u.name: u.password_hash for u in users}
        self._store = store
        self._session_s = session_s
        self._tokens = {name: t.encode() for name, t in (tokens or {}).items() if t}
        self._clock_s = clock_s
        self._monotonic_s = monotonic_s
        self.guard = LoginGuard(list(self._users), clock_s=monotonic_s)
        self.worker = worker or PasswordWorker()
        self.stats = AuthStats()
        self._token_failures: OrderedDict[str, list[float]] = OrderedDict()
        self._log = RefusalLog(log)

    @property
    def login_enabled(self) -> bool:
        """Whether any user is configured."""
        return bool(self._users)

    @property
    def tokens_enabled(self) -> bool:
        """Whether any API token is configured."""
        return bool(self._tokens)

    def close(self) -> None:
        """Stop the password worker."""
        self.worker.close()

    def _mac(self, purpose: str, text: str) -> str:
        digest = hmac.new(self._store.key, f"{purpose}\n{text}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def _fingerprint(self, user: str) -> str:
        return self._mac("password", self._users[user])[:16]

    def _hash_of(self, user: str) -> str:
        return self._store.upgraded_hash(user, self._fingerprint(user)) or self._users[user]

    # -- login -----------------------------------------------------------------------

    async def login(self, user: str, password: str, address: str) -> Session | Locked | None:
        """Check a password, counted before its hash is computed.

        Returns:
            The new session; ``Locked`` when the attempt was refused unchecked; None
            for a wrong user or password.

        Raises:
            Busy: Too many logins are waiting for the password worker.
        """
        user = user.strip().lower()[:MAX_USER_CHARS]
        attempt = self.guard.begin(user, address)
        if isinstance(attempt, Locked):
            self.stats.logins_locked += 1
            self.stats.locked_by[attempt.scope] = self.stats.locked_by.get(attempt.scope, 0) + 1
            self._log.warning(
                "Login refused unchecked: too many wrong passwords (%s locked) for %r from %s",
                attempt.scope,
                user[:32],
                address,
            )
            return attempt
        encoded = self._hash_of(user) if attempt.user is not None else dummy_hash()
        too_long = len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES
        try:
            ok = await self.worker.run(verify_password, password, encoded)
        except Busy:
            self.guard.cancel(attempt)
            self.stats.logins_busy += 1
            raise
        if not ok or too_long or attempt.user is None:
            self.stats.logins_wrong += 1
            self._log.warning("Login failed for %r from %s", user[:32], address)
            return None
        self.guard.succeeded(attempt)
        self.stats.logins_ok += 1
        log.info("Login: %r from %s", user, address)
        if needs_rehash(encoded):
            await self._upgrade(user, password)
        return self.issue(user)

    async def _upgrade(self, user: str, password: str) -> None:
        """Keep a hash made with today's parameters in the store (the config stays as is)."""
        try:
            encoded = await self.worker.run(hash_password, password)
            self._store.set_upgraded_hash(user, self._fingerprint(user), encoded)
            await asyncio.to_thread(self._store.save)
        except (Busy, OSError) as exc:
            log.warning("Could not keep an upgraded password hash for %r: %r", user, exc)
            return
        self.stats.hashes_upgraded += 1
        log.info("Password hash of %r upgraded to Argon2id (kept in the session store)", user)

    # -- sessions --------------------------------------------------------------------

    def issue(self, user: str) -> Session:
        """A new session for ``user`` (who must exist)."""
        expires = int(self._clock_s() + self._session_s)
        body = f"{user}.{expires}.{self._store.epoch(user)}.{self._fingerprint(user)}"
        return Session(user=user, expires_s=expires, cookie=f"{body}.{self._mac('session', body)}")

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, if genuine, current, not logged out, user valid."""
        if not cookie or len(cookie) > 512:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        parts = body.split(".")
        if len(parts) != 4:
            return None
        user, expires, epoch, fingerprint = parts
        if user not in self._users or not hmac.compare_digest(
            fingerprint.encode(), self._fingerprint(user).encode()
        ):
            return None
        try:
            expires_s, epoch_n = int(expires), int(epoch)
        except ValueError:  # pragma: no cover - the MAC vouches for what we wrote
            return None
        if expires_s <= self._clock_s() or epoch_n != self._store.epoch(user):
            return None
        return Session(user=user, expires_s=expires_s, cookie=cookie)

    async def logout(self, session: Session) -> None:
        """End every session of ``session.user``, here and on every other device."""
        self._store.end_sessions(session.user)
        self.stats.logouts += 1
        try:
            await asyncio.to_thread(self._store.save)
        except OSError as exc:
            # The new epoch holds in memory; only a restart before the next save undoes it.
            log.error("Could not save the session store after a logout: %r", exc)

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of ``session`` (sent by the page in ``X-CSRF-Token``)."""
        return self._mac("csrf", session.cookie)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is ``session``'s CSRF token."""
        return bool(token) and hmac.compare_digest(
            (token or "").encode(), self.csrf_token(session).encode()
        )

    # -- API tokens ------------------------------------------------------------------

    def check_token(self, given: str, address: str) -> TokenCheck:
        """Which token ``given`` is; wrong ones are counted, logged and throttled per address."""
        now = self._monotonic_s()
        failures = _recent(self._token_failures.get(address, []), now)
        if len(failures) >= TOKEN_FAILURES:
            self.stats.tokens_locked += 1
            self._log.warning("API token refused unchecked: too many wrong ones from %s", address)
            return TokenCheck(locked=True)
        raw = given.encode("utf-8", "surrogatepass")
        found = None
        for name, token in self._tokens.items():  # compare with every one: constant time
            if hmac.compare_digest(raw, token) and found is None:
                found = name
        if found is not None:
            self.stats.tokens_ok += 1
            return TokenCheck(name=found)
        failures.append(now)
        self._token_failures[address] = failures
        self._token_failures.move_to_end(address)
        while len(self._token_failures) > MAX_TRACKED_ADDRESSES:
            self._token_failures.popitem(last=False)
        self.stats.tokens_wrong += 1
        self._log.warning("Wrong API token from %s", address)
        return TokenCheck()

    def stats_doc(self) -> dict[str, object]:
        """The counters, for ``GET /api/web``."""
        doc = asdict(self.stats)
        doc["hashes_computed"] = self.worker.computed
        doc["hashes_pending"] = self.worker.pending
        return doc
