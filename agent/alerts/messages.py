"""Alert messages: one line for people, in Brazilian Portuguese (the default) or English.

A message is a head for the alert's state (``ALERTA``, ``RESOLVIDO``...), the rule's
title and a detail built from the alert's ``data`` alone, so an event's message can be
rendered again in the other language later (``Engine.messages``, for pages that switch
language). Numbers use a decimal comma in pt-BR; durations pick s, min, h or days.
"""

from __future__ import annotations

from typing import assert_never

from coffee_telemetry.agent.alerts.kinds import (
    CalibrationDueRule,
    DeviceSilentRule,
    HullerFaultRule,
    HumidStorageRule,
    MeterDisagreementRule,
    Rule,
    ServiceRule,
    SinkBacklogRule,
    WetLotRule,
)
from coffee_telemetry.agent.alerts.model import Alert, AlertState, Data, Lang, RuleState


def _tr(lang: Lang, pt: str, en: str) -> str:
    return pt if lang == "pt-BR" else en


def _num(value: float, digits: int, lang: Lang) -> str:
    text = f"{value:.{digits}f}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def _dur(seconds: float, lang: Lang) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{_num(seconds / 3600, 1, lang)} h"
    return _tr(lang, f"{seconds / 86400:.0f} dias", f"{seconds / 86400:.0f} days")


def _s(data: Data, key: str) -> str:
    value = data.get(key, "")
    return value if isinstance(value, str) else str(value)


def _f(data: Data, key: str) -> float:
    value = data.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def alert_message(rule: Rule, alert: Alert | RuleState, lang: Lang) -> str:
    """The message of ``alert`` (an event, or a subject's state) in ``lang``.

    Events carry their message in the engine's language only; ``Engine.messages``
    renders the others with this.
    """
    head = _head(alert.state, alert.repeat, alert.acked_by, lang)
    resolved = alert.state is AlertState.RESOLVED
    title, detail = _describe(rule, alert.subject, alert.data, resolved, lang)
    return f"{head} — {title}: {detail}"


def _head(state: AlertState, repeat: int, acked_by: str | None, lang: Lang) -> str:
    match state:
        case AlertState.PENDING:
            return _tr(lang, "PENDENTE", "PENDING")
        case AlertState.FIRING:
            head = _tr(lang, "ALERTA", "ALERT")
            if repeat:
                head += _tr(lang, f" (lembrete {repeat})", f" (reminder {repeat})")
            return head
        case AlertState.ACKNOWLEDGED:
            return _tr(lang, f"RECONHECIDO por {acked_by}", f"ACKNOWLEDGED by {acked_by}")
        case AlertState.RESOLVED:
            return _tr(lang, "RESOLVIDO", "RESOLVED")
        case _:
            assert_never(state)


def _describe(rule: Rule, subject: str, data: Data, resolved: bool, lang: Lang) -> tuple[str, str]:
    title = _title(rule, lang)
    if resolved and data.get("removed") is True:
        return title, _tr(
            lang, f"{subject}: não está mais configurado", f"{subject}: no longer configured"
        )
    match rule:
        case WetLotRule():
            return title, _wet_lot_text(subject, data, lang)
        case DeviceSilentRule():
            return title, _silent_text(subject, data, resolved, lang)
        case HullerFaultRule():
            return title, _huller_text(data, resolved, lang)
        case ServiceRule():
            return title, _service_text(data, lang)
        case SinkBacklogRule():
            return title, _sink_text(subject, data, resolved, lang)
        case HumidStorageRule():
            return title, _humid_text(subject, data, lang)
        case CalibrationDueRule():
            return title, _calibration_text(subject, data, lang)
        case MeterDisagreementRule():
            return title, _disagreement_text(subject, data, lang)
        case _:
            assert_never(rule)


def _title(rule: Rule, lang: Lang) -> str:
    match rule:
        case WetLotRule():
            return _tr(lang, "Lote úmido", "Wet lot")
        case DeviceSilentRule():
            return _tr(lang, "Equipamento sem sinal", "Device silent")
        case HullerFaultRule():
            return _tr(lang, "Falha no descascador", "Huller fault")
        case ServiceRule():
            if rule.level == "overdue":
                return _tr(lang, "Manutenção atrasada", "Service overdue")
            return _tr(lang, "Manutenção vencendo", "Service due")
        case SinkBacklogRule():
            return _tr(lang, "Envio parado", "Sink backlog")
        case HumidStorageRule():
            return _tr(lang, "Armazém úmido", "Humid storage")
        case CalibrationDueRule():
            return _tr(lang, "Calibração vencendo", "Calibration due")
        case MeterDisagreementRule():
            return _tr(lang, "Medidores discordam", "Meters disagree")
        case _:
            assert_never(rule)


def _wet_lot_text(lot: str, data: Data, lang: Lang) -> str:
    station = _s(data, "station")
    count = int(_f(data, "count"))
    mean, top, limit = (
        _num(_f(data, k), 1, lang) for k in ("mean_pct", "max_pct", "threshold_pct")
    )
    text = _tr(
        lang,
        f"lote {lot}{f', estação {station}' if station else ''}: média {mean} %, "
        f"máx. {top} %, {count} {'leitura' if count == 1 else 'leituras'} (limite {limit} %)",
        f"lot {lot}{f' at station {station}' if station else ''}: mean {mean} %, "
        f"max {top} %, {count} {'reading' if count == 1 else 'readings'} (threshold {limit} %)",
    )
    if data.get("forgotten") is True:
        text += _tr(
            lang, "; sem leituras novas, lote esquecido", "; no new readings, lot forgotten"
        )
    return text


def _silent_text(device: str, data: Data, resolved: bool, lang: Lang) -> str:
    station = _s(data, "station")
    where = f"{device} ({_s(data, 'driver')}{f', {station}' if station else ''})"
    if resolved:
        return _tr(lang, f"{where}: voltou a enviar dados", f"{where}: frames are back")
    silent, limit = _dur(_f(data, "silent_s"), lang), _dur(_f(data, "limit_s"), lang)
    return _tr(
        lang,
        f"{where}: nenhum dado válido há {silent} (limite {limit})",
        f"{where}: no valid frame for {silent} (limit {limit})",
    )


def _huller_text(data: Data, resolved: bool, lang: Lang) -> str:
    huller = _s(data, "huller")
    fault = _s(data, "fault")
    if fault == "comms":
        if resolved:
            return _tr(lang, f"{huller}: comunicação normal", f"{huller}: communication is back")
        error = _s(data, "last_error")
        if data.get("online") is False:
            text = _tr(
                lang,
                f"{huller}: sem comunicação há {_dur(_f(data, 'offline_s'), lang)}",
                f"{huller}: no communication for {_dur(_f(data, 'offline_s'), lang)}",
            )
        else:
            n, window = int(_f(data, "errors")), _dur(_f(data, "window_s"), lang)
            text = _tr(
                lang,
                f"{huller}: {n} erros de comunicação em {window}",
                f"{huller}: {n} communication errors in {window}",
            )
        if error:
            text += _tr(lang, f"; último erro: {error}", f"; last error: {error}")
        return text
    if fault == "jam":
        if resolved:
            return _tr(
                lang,
                f"{huller}: sacos voltaram a ser contados ou o motor parou",
                f"{huller}: bags are counted again or the motor stopped",
            )
        idle, limit = _dur(_f(data, "idle_s"), lang), _dur(_f(data, "limit_s"), lang)
        return _tr(
            lang,
            f"{huller}: motor ligado sem contar sacos há {idle} (limite {limit});"
            " possível embuchamento",
            f"{huller}: motor running with no bag counted for {idle} (limit {limit}); possible jam",
        )
    if resolved:
        return _tr(
            lang,
            f"{huller}: entrada do motor e horímetro voltaram a concordar",
            f"{huller}: motor input and hour meter agree again",
        )
    gain = _num(_f(data, "gain_h"), 2, lang)
    return _tr(
        lang,
        f"{huller}: horímetro avançou {gain} h com a entrada do motor desligada;"
        " verificar a fiação",
        f"{huller}: hour meter advanced {gain} h while the motor input was off; check the wiring",
    )


def _service_text(data: Data, lang: Lang) -> str:
    where = f"{_s(data, 'huller')} / {_s(data, 'task')}"
    since, interval = _num(_f(data, "hours_since"), 1, lang), _num(_f(data, "interval_h"), 0, lang)
    remaining = _f(data, "remaining_h")
    match _s(data, "task_state"):
        case "overdue":
            status = _tr(
                lang,
                f"ATRASADA há {_num(-remaining, 1, lang)} h",
                f"overdue by {_num(-remaining, 1, lang)} h",
            )
        case "due":
            status = _tr(
                lang,
                f"VENCENDO, faltam {_num(remaining, 1, lang)} h",
                f"due, {_num(remaining, 1, lang)} h left",
            )
        case _:
            status = _tr(lang, "em dia", "ok")
    return _tr(
        lang,
        f"{where}: {since} h desde o último serviço (intervalo {interval} h), {status}",
        f"{where}: {since} h since the last service (interval {interval} h), {status}",
    )


def _sink_text(sink: str, data: Data, resolved: bool, lang: Lang) -> str:
    backlog = int(_f(data, "backlog"))
    if resolved:
        return _tr(
            lang,
            f"{sink}: entregas retomadas, {backlog} registros na fila",
            f"{sink}: deliveries resumed, {backlog} records waiting",
        )
    waiting, limit = _dur(_f(data, "undelivered_s"), lang), _dur(_f(data, "limit_s"), lang)
    return _tr(
        lang,
        f"{sink}: nada entregue há {waiting} (limite {limit}); {backlog} registros na fila",
        f"{sink}: nothing delivered for {waiting} (limit {limit}); {backlog} records waiting",
    )


def _humid_text(device: str, data: Data, lang: Lang) -> str:
    area = _s(data, "area")
    rh, limit = (_num(_f(data, k), 1, lang) for k in ("rh_pct", "threshold_pct"))
    during = _dur(_f(data, "pending_s"), lang)
    where = _tr(
        lang,
        f"área {area}, sensor {device}" if area else f"sensor {device}",
        f"area {area}, sensor {device}" if area else f"sensor {device}",
    )
    text = _tr(
        lang,
        f"{where}: umidade relativa {rh} % (limite {limit} % por {during})",
        f"{where}: relative humidity {rh} % (limit {limit} % for {during})",
    )
    if "temperature_c" in data:
        text += f", {_num(_f(data, 'temperature_c'), 1, lang)} °C"
    return text


def _calibration_text(device: str, data: Data, lang: Lang) -> str:
    days = int(_f(data, "days_left"))
    due = _s(data, "due_date") or "-"
    cert = _s(data, "certificate")
    what = _tr(
        lang,
        f"medidor {device}{f', certificado {cert}' if cert else ''}",
        f"meter {device}{f', certificate {cert}' if cert else ''}",
    )
    if days < 0:
        return _tr(
            lang,
            f"{what}: calibração VENCIDA em {due} (há {-days} dias)",
            f"{what}: calibration OVERDUE since {due} ({-days} days)",
        )
    return _tr(
        lang,
        f"{what}: calibração vence em {due} (em {days} dias)",
        f"{what}: calibration due {due} (in {days} days)",
    )


def _disagreement_text(lot: str, data: Data, lang: Lang) -> str:
    a, b = _s(data, "device"), _s(data, "other_device")
    pa, pb = _num(_f(data, "last_pct"), 1, lang), _num(_f(data, "other_pct"), 1, lang)
    diff, tol = _num(abs(_f(data, "diff_pp")), 2, lang), _num(_f(data, "tolerance_pp"), 1, lang)
    return _tr(
        lang,
        f"lote {lot}: {a} {pa} % e {b} {pb} %, diferença {diff} pp (tolerância {tol} pp)",
        f"lot {lot}: {a} {pa} % and {b} {pb} %, difference {diff} pp (tolerance {tol} pp)",
    )
