"""What the HTTP channels share: one POST of JSON, and what its answer means.

* 2xx: sent.
* 429, 408, 5xx, a timeout, a refused or dropped connection: try again later, after
  ``Retry-After`` (seconds or an HTTP date) or the channel's own hint (Telegram's
  ``parameters.retry_after``) when the server gives one.
* 401, 403, 404, 410: the token was refused or the bot, topic or number is not there:
  a dead letter (it will not work better later; health shows it).
* any other 4xx: the server refuses this message: a dead letter.
* 3xx: not followed (the token would travel to wherever it points): a dead letter
  saying to configure the final URL.

Tokens sit in headers or, for Telegram, in the URL's path: neither is ever logged or
put in a reason; a reason names the server's origin only.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from coffee_telemetry.agent.notify.model import Outcome, Refused, Retry, Sent

__all__ = ["HttpAnswer", "classify", "origin", "parse_retry_after", "post_json"]

#: Most bytes of an answer read.
MAX_ANSWER_BYTES = 64 * 1024
#: Longest server text kept in a reason.
MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A server's answer: status, its JSON (if it was JSON), text, ``Retry-After``."""

    status: int
    doc: Mapping[str, object] | None
    text: str
    retry_after_s: float | None


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (what reasons and logs may show)."""
    return str(URL(url).origin())


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), if it says one."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    doc: Mapping[str, object],
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
) -> HttpAnswer | Retry:
    """POST ``doc`` as JSON; the answer, or ``Retry`` when there was none."""
    where = origin(url)
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        async with (
            asyncio.timeout(timeout_s),
            session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                allow_redirects=False,
            ) as response,
        ):
            raw = await response.content.read(MAX_ANSWER_BYTES)
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except TimeoutError:
        return Retry(f"{where}: no answer within {timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Retry(f"{where}: {type(exc).__name__}")
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return HttpAnswer(
        status=status,
        doc=parsed if isinstance(parsed, dict) else None,
        text=" ".join(text.split())[:MAX_REASON_CHARS],
        retry_after_s=retry_after,
    )


def classify(
    answer: HttpAnswer | Retry, *, where: str, detail: str = "", retry_after_s: float | None = None
) -> Outcome:
    """What an answer means for the message (see the module docstring).

    Args:
        answer: ``post_json``'s result.
        where: The server's origin, for the reason.
        detail: The server's own words (its error description), if better than the body.
        retry_after_s: The server's hint in its body, used when there is no header.
    """
    if isinstance(answer, Retry):
        return answer
    status = answer.status
    said = detail or answer.text
    reason = f"{where}: HTTP {status}" + (f": {said}" if said else "")
    if 200 <= status <= 299:
        return Sent(str(status))
    after = answer.retry_after_s if answer.retry_after_s is not None else retry_after_s
    if status in (408, 429) or 500 <= status <= 599:
        return Retry(reason, after)
    if 300 <= status <= 399:
        return Refused(f"{reason}; redirect not followed, configure the final URL", status)
    if status in (401, 403):
        return Refused(f"{reason}; the token was refused", status)
    if 400 <= status <= 499:
        return Refused(reason, status)
    return Retry(reason, after)
