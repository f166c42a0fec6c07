"""The words of every notification, in Brazilian Portuguese and English.

``render`` turns an alert event into a title and a body for one contact on one
channel. Texts are plain: each channel escapes them for its own markup (HTML for
e-mail and Telegram). SMS bodies stay short (every 70 characters of Portuguese with
accents is another part) and carry the acknowledgement code; the others carry the
link when the agent has a ``public_url``.

``render_digest`` writes the daily digest: open alerts and the last 24 hours', then
(given ``DigestFacts``) today's lots with their verdicts, service tasks due or overdue,
devices offline and sink backlogs. Each section lists a bounded number of items and
says how many more there are; an empty one says there is nothing to report. Values
from outside (lot codes, device ids, errors) are put on one line and capped.
"""

from __future__ import annotations

import html
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.notify.digest import (
    DeviceOffline,
    DigestFacts,
    LotVerdict,
    SinkBacklog,
    TaskDue,
)
from coffee_telemetry.agent.notify.model import AlertEvent, MessageKind

__all__ = [
    "DIGEST_ITEMS",
    "DIGEST_ITEMS_SMS",
    "DIGEST_MAX_CHARS",
    "RULE_LABELS",
    "Rendered",
    "render",
    "render_digest",
    "severity_label",
]

#: Rule names as people say them.
RULE_LABELS: dict[str, tuple[str, str]] = {
    "wet_lot": ("Lote úmido", "Wet lot"),
    "device_silent": ("Equipamento sem dados", "Device silent"),
    "huller_fault": ("Falha no descascador", "Huller fault"),
    "service_due": ("Manutenção vencendo", "Service due"),
    "service_overdue": ("Manutenção atrasada", "Service overdue"),
    "sink_backlog": ("Entrega de dados parada", "Data delivery stalled"),
    "ready_to_hull": ("Pronto para beneficiar", "Ready to hull"),
    "calibration_due": ("Calibração vencendo", "Calibration due"),
    "meter_disagreement": ("Medidores discordam", "Meters disagree"),
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


#: Most items a digest section lists (then "and N more"); SMS gets fewer.
DIGEST_ITEMS = 10
DIGEST_ITEMS_SMS = 3
#: Longest digest body per channel; over it, every section lists fewer items
#: (``_FEWER``), down to none (headings and counts only).
#: Telegram counts its escaped HTML, ntfy UTF-8 bytes (``_digest_size``).
DIGEST_MAX_CHARS = {
    "sms": 800,
    "telegram": 3800,
    "ntfy": 3800,
    "whatsapp": 1000,
    "default": 16000,
}
_FEWER = (5, 3, 1, 0)
#: Longest dynamic value (a lot code, a device id, an error) a digest line shows.
DIGEST_VALUE_CHARS = 60


def _clean(value: str, limit: int = DIGEST_VALUE_CHARS) -> str:
    """``value`` on one line, control characters as ``?``, at most ``limit`` characters."""
    text = "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in value
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float, lang: str, digits: int = 1) -> str:
    """``13,4`` (pt-BR) or ``13.4`` (en)."""
    text = f"{value:.{digits}f}"
    return text if lang == "en" else text.replace(".", ",")


def _section(
    heading: tuple[str, str], items: Sequence[str] | None, lang: str, cap: int
) -> list[str]:
    """``Heading (n):`` and at most ``cap`` items; or ``Heading: nada a relatar``."""
    label = _tr(lang, *heading)
    if items is None:
        return [label + _tr(lang, ": indisponível", ": unavailable")]
    if not items:
        return [label + _tr(lang, ": nada a relatar", ": nothing to report")]
    lines = [f"{label} ({len(items)}):", *(f"- {item}" for item in items[:cap])]
    if len(items) > cap:
        more = len(items) - cap
        lines.append(_tr(lang, f"- e mais {more}", f"- and {more} more"))
    return lines


def _open_alert_line(event: AlertEvent, zone: ZoneInfo, lang: str) -> str:
    since = clock_text(event.since_ns, zone, lang)
    line = f"{rule_label(event.rule, lang)} {_clean(event.subject)}, " + _tr(
        lang, f"desde {since}", f"since {since}"
    )
    if event.state == "acknowledged":
        who = _clean(event.acked_by or "?")
        line += _tr(lang, f" (reconhecido por {who})", f" (acknowledged by {who})")
    return line


def _lot_line(lot: LotVerdict, lang: str) -> str:
    where = ", ".join(_clean(v) for v in (lot.station, lot.product) if v)
    verdict = _tr(lang, "ÚMIDO", "WET") if lot.wet else "ok"
    limit = _number(lot.threshold_pct, lang)
    return (
        _clean(lot.lot)
        + (f" ({where})" if where else "")
        + _tr(
            lang,
            f": {lot.count} leituras, média {_number(lot.mean_pct, lang)} %,"
            f" máx. {_number(lot.max_pct, lang)} % — {verdict} (limite {limit} %)",
            f": {lot.count} readings, mean {_number(lot.mean_pct, lang)} %,"
            f" max {_number(lot.max_pct, lang)} % — {verdict} (threshold {limit} %)",
        )
    )


def _task_line(task: TaskDue, zone: ZoneInfo, lang: str) -> str:
    huller = _clean(task.huller)
    if task.huller_name:
        huller = f"{_clean(task.huller_name)} ({huller})"
    state = _tr(lang, "ATRASADA", "OVERDUE") if task.overdue else _tr(lang, "VENCENDO", "DUE")
    since, interval = _number(task.hours_since, lang), _number(task.interval_h, lang)
    head = f"{huller}: {_clean(task.name or task.task)} — {state}, "
    if task.last_done_ns is None:  # counted from hour 0 of the huller
        return head + _tr(
            lang,
            f"{since} h sem serviço registrado (intervalo {interval} h)",
            f"{since} h with no service recorded (interval {interval} h)",
        )
    when = clock_text(task.last_done_ns, zone, lang)
    return head + _tr(
        lang,
        f"{since} h desde o último serviço, em {when} (intervalo {interval} h)",
        f"{since} h since the last service, on {when} (interval {interval} h)",
    )


def _offline_line(dev: DeviceOffline, zone: ZoneInfo, lang: str) -> str:
    name = _clean(dev.device) + (f" ({_clean(dev.station)})" if dev.station else "")
    if dev.last_seen_ns is None:
        seen = _tr(lang, "sem dados desde que o agente iniciou", "no data since the agent started")
    else:
        when = clock_text(dev.last_seen_ns, zone, lang)
        seen = _tr(lang, f"sem dados desde {when}", f"no data since {when}")
    error = f" — {_clean(dev.error)}" if dev.error else ""
    return f"{name}: {seen}{error}"


def _backlog_line(sink: SinkBacklog, zone: ZoneInfo, lang: str) -> str:
    if sink.last_delivery_ns is None:
        last = _tr(
            lang,
            "nada entregue desde que o agente iniciou",
            "nothing delivered since the agent started",
        )
    else:
        when = clock_text(sink.last_delivery_ns, zone, lang)
        last = _tr(lang, f"última entrega {when}", f"last delivery {when}")
    error = f" — {_clean(sink.error)}" if sink.error else ""
    return (
        f"{_clean(sink.sink)}: "
        + _tr(lang, f"{sink.records} registros a entregar", f"{sink.records} records to deliver")
        + f", {last}{error}"
    )


def _digest_size(text: str, channel: str) -> int:
    """How ``channel`` counts ``text`` against its limit."""
    if channel == "telegram":
        return len(html.escape(text))
    if channel == "ntfy":
        return len(text.encode())
    return len(text)


def _facts_sections(facts: DigestFacts, lang: str, zone: ZoneInfo, cap: int) -> list[list[str]]:
    lots = None
    if facts.lots is not None:  # wet lots first, then the latest
        ordered = sorted(facts.lots, key=lambda v: (not v.wet, -v.last_ns, v.lot))
        lots = [_lot_line(v, lang) for v in ordered]
    tasks = None
    if facts.tasks is not None:  # overdue first, then the furthest past due
        ordered_tasks = sorted(
            facts.tasks,
            key=lambda t: (not t.overdue, t.interval_h - t.hours_since, t.huller, t.task),
        )
        tasks = [_task_line(t, zone, lang) for t in ordered_tasks]
    offline = None
    if facts.offline is not None:
        offline = [
            _offline_line(d, zone, lang) for d in sorted(facts.offline, key=lambda d: d.device)
        ]
    backlogs = None
    if facts.backlogs is not None:
        ordered_sinks = sorted(facts.backlogs, key=lambda s: (-s.records, s.sink))
        backlogs = [_backlog_line(s, zone, lang) for s in ordered_sinks]
    return [
        _section(("Lotes de hoje", "Today's lots"), lots, lang, cap),
        _section(
            ("Manutenção vencendo ou atrasada", "Service tasks due or overdue"), tasks, lang, cap
        ),
        _section(("Equipamentos offline", "Devices offline"), offline, lang, cap),
        _section(("Entregas de dados pendentes", "Data delivery backlogs"), backlogs, lang, cap),
    ]


def render_digest(
    *,
    events: Sequence[AlertEvent],
    still_open: Sequence[AlertEvent],
    lang: str,
    zone: ZoneInfo,
    site: str,
    at_ns: int,
    facts: DigestFacts | None = None,
    channel: str = "email",
) -> Rendered:
    """The daily digest: open alerts and the last 24 hours', then ``facts``' sections.

    Sections are separated by a blank line; each lists at most ``DIGEST_ITEMS`` items
    (``DIGEST_ITEMS_SMS`` on SMS), fewer when the body would pass the channel's
    ``DIGEST_MAX_CHARS``, and says how many more there are; an empty one says there is
    nothing to report.

    Args:
        events: The alert events of the last 24 hours, oldest first.
        still_open: The latest event of every alert still open.
        lang: ``pt-BR`` or ``en``.
        zone: The site's time zone.
        site: The site's name.
        at_ns: When the digest is made.
        facts: Today's lots, service tasks, devices offline, sink backlogs (``None``:
            only the alerts).
        channel: Where it goes (its size limit).
    """
    local = datetime.fromtimestamp(at_ns / 1e9, tz=UTC).astimezone(zone)
    day = local.strftime("%m/%d" if lang == "en" else "%d/%m")
    title = _tr(lang, f"Resumo diário — {site} — {day}", f"Daily summary — {site} — {day}")
    fired = [e for e in events if e.state == "firing" and e.repeat == 0]
    acked = [e for e in events if e.state == "acknowledged"]
    resolved = [e for e in events if e.state == "resolved"]
    if not fired and not acked and not resolved:
        day_line = _tr(lang, "Nenhum alerta nas últimas 24 h.", "No alerts in the last 24 h.")
    else:
        by_rule = Counter(rule_label(e.rule, lang) for e in fired)
        by_who = Counter(_clean(e.acked_by or "?") for e in acked)
        rules = ", ".join(f"{label}: {n}" for label, n in by_rule.most_common(DIGEST_ITEMS))
        who = ", ".join(f"{name}: {n}" for name, n in by_who.most_common(DIGEST_ITEMS))
        day_line = (
            _tr(lang, f"Últimas 24 h: {len(fired)} alertas", f"Last 24 h: {len(fired)} alerts")
            + (f" ({rules})." if rules else ".")
            + _tr(lang, f" Reconhecidos: {len(acked)}", f" Acknowledged: {len(acked)}")
            + (f" ({who})" if who else "")
            + _tr(lang, f". Resolvidos: {len(resolved)}.", f". Resolved: {len(resolved)}.")
        )
    open_lines = [_open_alert_line(e, zone, lang) for e in still_open]

    def body(cap: int) -> str:
        alerts = _section(("Alertas abertos", "Open alerts"), open_lines, lang, cap)
        sections = [[*alerts, day_line]]
        if facts is not None:
            sections += _facts_sections(facts, lang, zone, cap)
        return "\n\n".join("\n".join(lines) for lines in sections)

    budget = DIGEST_MAX_CHARS.get(channel, DIGEST_MAX_CHARS["default"])
    first = DIGEST_ITEMS_SMS if channel == "sms" else DIGEST_ITEMS
    for cap in (first, *(c for c in _FEWER if c < first)):
        text = body(cap)
        if _digest_size(text, channel) <= budget:
            break
    return Rendered(title, text)
