"""The words of every notification, in Brazilian Portuguese and English.

``render`` turns an alert event into a title and a body for one contact on one
channel. Texts are plain: each channel escapes them for its own markup (HTML for
e-mail and Telegram). SMS bodies stay short (every 70 characters of Portuguese with
accents is another part) and carry the acknowledgement code; the others carry the
link when the agent has a ``public_url``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.notify.model import AlertEvent, MessageKind

__all__ = ["RULE_LABELS", "Rendered", "render", "render_digest", "severity_label"]

#: Rule names as people say them.
RULE_LABELS: dict[str, tuple[str, str]] = {
    "wet_lot": ("Lote úmido", "Wet lot"),
    "device_silent": ("Equipamento sem dados", "Device silent"),
    "huller_fault": ("Falha no descascador", "Huller fault"),
    "service_due": ("Manutenção vencendo", "Service due"),
    "service_overdue": ("Manutenção atrasada", "Service overdue"),
    "sink_backlog": ("Entrega de dados parada", "Data delivery stalled"),
}
_SEVERITY = {
    "critical": ("CRÍTICO", "CRITICAL"),
    "warning": ("AVISO", "WARNING"),
    "info": ("INFO", "INFO"),
}


def _tr(lang: str, pt: str, en: str) -> str:
    return en if lang == "en" else pt


def severity_label(severity: str, lang: str) -> str:
    """``CRÍTICO`` / ``CRITICAL``..."""
    pt, en = _SEVERITY.get(severity, (severity.upper(), severity.upper()))
    return _tr(lang, pt, en)


def rule_label(rule: str, lang: str) -> str:
    """``Lote úmido`` / ``Wet lot``... (the rule's name if it has no label)."""
    pt, en = RULE_LABELS.get(rule, (rule, rule))
    return _tr(lang, pt, en)


def clock_text(at_ns: int, zone: ZoneInfo, lang: str) -> str:
    """``30/11 10:41`` (pt-BR) or ``11/30 10:41`` (en), site time."""
    local = datetime.fromtimestamp(at_ns / 1e9, tz=UTC).astimezone(zone)
    return local.strftime("%m/%d %H:%M" if lang == "en" else "%d/%m %H:%M")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A title and a body."""

    title: str
    body: str


def render(
    event: AlertEvent,
    *,
    kind: MessageKind,
    lang: str,
    channel: str,
    zone: ZoneInfo,
    site: str,
    ack_url: str | None = None,
    ack_code: str | None = None,
    previous: str | None = None,
    waited_min: float | None = None,
) -> Rendered:
    """The title and body of one notification.

    Args:
        event: The alert event.
        kind: What the message says.
        lang: ``pt-BR`` or ``en``.
        channel: Where it goes (SMS gets the code, not the link).
        zone: The site's time zone.
        site: The site's name.
        ack_url: The acknowledgement link.
        ack_code: The acknowledgement code.
        previous: For ``escalated``: who did not acknowledge.
        waited_min: For ``escalated``: for how long.
    """
    label = rule_label(event.rule, lang)
    sev = severity_label(event.severity, lang)
    text = event.message(lang)
    when = clock_text(event.since_ns, zone, lang)
    match kind:
        case "firing" | "escalated":
            title = f"[{sev}] {label}: {event.subject}"
            if event.repeat:
                title = _tr(lang, "Lembrete ", "Reminder ") + title
        case "acknowledged":
            title = _tr(lang, "Reconhecido: ", "Acknowledged: ") + f"{label} {event.subject}"
        case "resolved":
            title = _tr(lang, "Resolvido: ", "Resolved: ") + f"{label} {event.subject}"
        case "digest":  # pragma: no cover - digests are rendered by render_digest
            title = label
    lines = [text]
    if kind == "escalated" and previous is not None:
        minutes = f"{waited_min:g}" if waited_min is not None else "?"
        if lang != "en":
            minutes = minutes.replace(".", ",")
        lines.insert(
            0,
            _tr(
                lang,
                f"Sem reconhecimento de {previous} em {minutes} min.",
                f"Not acknowledged by {previous} within {minutes} min.",
            ),
        )
    if kind == "acknowledged":
        lines.append(_tr(lang, f"Reconhecido por {event.acked_by}.", f"By {event.acked_by}."))
    if kind in ("firing", "escalated"):
        if channel != "sms":  # every 67 characters of an SMS is another part
            lines.append(_tr(lang, f"Desde {when} — {site}", f"Since {when} — {site}"))
        if channel == "sms" and ack_code:
            lines.append(_tr(lang, f"Reconhecer: responda {ack_code}", f"Ack: reply {ack_code}"))
        elif ack_url:
            lines.append(_tr(lang, f"Reconhecer: {ack_url}", f"Acknowledge: {ack_url}"))
    if channel == "sms":
        # The alert's message names its severity, rule and subject already; every 67
        # characters of accented Portuguese is another part to pay for.
        if kind in ("acknowledged", "resolved"):
            lines.insert(0, title)
        return Rendered(title=title, body="\n".join(lines))
    return Rendered(title=title, body="\n".join(lines))


def render_digest(
    *,
    events: Sequence[AlertEvent],
    still_open: Sequence[AlertEvent],
    lang: str,
    zone: ZoneInfo,
    site: str,
    at_ns: int,
) -> Rendered:
    """The daily digest: the last 24 hours' alerts, who acknowledged, what is still open.

    Args:
        events: The alert events of the last 24 hours, oldest first.
        still_open: The latest event of every alert still open.
        lang: ``pt-BR`` or ``en``.
        zone: The site's time zone.
        site: The site's name.
        at_ns: When the digest is made.
    """
    local = datetime.fromtimestamp(at_ns / 1e9, tz=UTC).astimezone(zone)
    day = local.strftime("%m/%d" if lang == "en" else "%d/%m")
    title = _tr(lang, f"Resumo diário — {site} — {day}", f"Daily summary — {site} — {day}")
    fired = [e for e in events if e.state == "firing" and e.repeat == 0]
    acked = [e for e in events if e.state == "acknowledged"]
    resolved = [e for e in events if e.state == "resolved"]
    if not fired and not acked and not resolved and not still_open:
        return Rendered(
            title, _tr(lang, "Nenhum alerta nas últimas 24 h.", "No alerts in the last 24 h.")
        )
    by_rule = Counter(rule_label(e.rule, lang) for e in fired)
    by_who = Counter(e.acked_by or "?" for e in acked)
    rules = ", ".join(f"{label}: {n}" for label, n in by_rule.most_common())
    who = ", ".join(f"{name}: {n}" for name, n in by_who.most_common())
    lines = [
        _tr(lang, f"Últimas 24 h: {len(fired)} alertas", f"Last 24 h: {len(fired)} alerts")
        + (f" ({rules})." if rules else "."),
        _tr(lang, f"Reconhecidos: {len(acked)}", f"Acknowledged: {len(acked)}")
        + (f" ({who})" if who else "")
        + _tr(lang, f". Resolvidos: {len(resolved)}.", f". Resolved: {len(resolved)}."),
        _tr(lang, f"Abertos agora: {len(still_open)}", f"Open now: {len(still_open)}"),
    ]
    for event in still_open:
        since = clock_text(event.since_ns, zone, lang)
        line = f"- {rule_label(event.rule, lang)} {event.subject}, " + _tr(
            lang, f"desde {since}", f"since {since}"
        )
        if event.state == "acknowledged":
            line += _tr(
                lang, f" (reconhecido por {event.acked_by})", f" (acknowledged by {event.acked_by})"
            )
        lines.append(line)
    return Rendered(title, "\n".join(lines))
