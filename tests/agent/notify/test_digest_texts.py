"""The daily digest's words: every section filled and empty, in pt-BR and English."""

from __future__ import annotations

import html

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.notify.digest import (
    DeviceOffline,
    DigestFacts,
    LotVerdict,
    SinkBacklog,
    TaskDue,
)
from coffee_telemetry.agent.notify.texts import (
    DIGEST_ITEMS,
    DIGEST_ITEMS_SMS,
    DIGEST_MAX_CHARS,
    render_digest,
)
from tests.agent.notify.helpers import ZONE, event, local_ns

NOW = local_ns("2026-11-30 07:00")

FACTS = DigestFacts(
    lots=(
        LotVerdict(
            lot="L-8",
            station="recepcao",
            product="",
            count=4,
            mean_pct=11.0,
            max_pct=11.4,
            threshold_pct=12.5,
            wet=False,
            last_ns=local_ns("2026-11-30 06:50"),
        ),
        LotVerdict(
            lot="L-7",
            station="recepcao",
            product="arabica",
            count=12,
            mean_pct=13.14,
            max_pct=13.8,
            threshold_pct=12.5,
            wet=True,
            last_ns=local_ns("2026-11-30 06:40"),
        ),
    ),
    tasks=(
        TaskDue(
            huller="desc-2",
            huller_name="",
            task="oleo",
            name="Óleo",
            overdue=False,
            hours_since=245.5,
            interval_h=250.0,
            last_done_ns=None,
        ),
        TaskDue(
            huller="desc-1",
            huller_name="Descascador 1",
            task="peneira",
            name="Troca de peneira",
            overdue=True,
            hours_since=512.0,
            interval_h=500.0,
            last_done_ns=local_ns("2026-10-01 09:00"),
        ),
    ),
    offline=(
        DeviceOffline(
            device="umid-2",
            station="secador",
            since_ns=local_ns("2026-11-30 06:10"),
            last_seen_ns=local_ns("2026-11-30 06:09"),
            error="port: no such file",
        ),
        DeviceOffline(device="balanca-1", station="", since_ns=NOW, last_seen_ns=None, error=None),
    ),
    backlogs=(
        SinkBacklog(
            sink="influx",
            records=1234,
            last_delivery_ns=local_ns("2026-11-30 05:00"),
            error="connection refused",
        ),
    ),
)

EMPTY = DigestFacts(lots=(), tasks=(), offline=(), backlogs=())


def digest(
    lang: str, facts: DigestFacts | None, *, open_alert: bool = True, channel: str = "email"
) -> str:
    since = local_ns("2026-11-29 15:00")
    events = [event(subject="L-7", since_ns=since)] if open_alert else []
    still = [event("acknowledged", subject="L-7", since_ns=since, acked_by="Maria")]
    text = render_digest(
        events=events,
        still_open=still if open_alert else [],
        lang=lang,
        zone=ZONE,
        site="Armazém 1",
        at_ns=NOW,
        facts=facts,
        channel=channel,
    )
    return text.body


def test_every_section_filled_in_portuguese() -> None:
    assert digest("pt-BR", FACTS) == (
        "Alertas abertos (1):\n"
        "- Lote úmido L-7, desde 29/11 15:00 (reconhecido por Maria)\n"
        "Últimas 24 h: 1 alertas (Lote úmido: 1). Reconhecidos: 0. Resolvidos: 0.\n"
        "\n"
        "Lotes de hoje (2):\n"
        "- L-7 (recepcao, arabica): 12 leituras, média 13,1 %, máx. 13,8 %"
        " — ÚMIDO (limite 12,5 %)\n"
        "- L-8 (recepcao): 4 leituras, média 11,0 %, máx. 11,4 % — ok (limite 12,5 %)\n"
        "\n"
        "Manutenção vencendo ou atrasada (2):\n"
        "- Descascador 1 (desc-1): Troca de peneira — ATRASADA, 512,0 h desde o último"
        " serviço, em 01/10 09:00 (intervalo 500,0 h)\n"
        "- desc-2: Óleo — VENCENDO, 245,5 h sem serviço registrado (intervalo 250,0 h)\n"
        "\n"
        "Equipamentos offline (2):\n"
        "- balanca-1: sem dados desde que o agente iniciou\n"
        "- umid-2 (secador): sem dados desde 30/11 06:09 — port: no such file\n"
        "\n"
        "Entregas de dados pendentes (1):\n"
        "- influx: 1234 registros a entregar, última entrega 30/11 05:00"
        " — connection refused"
    )


def test_every_section_filled_in_english() -> None:
    assert digest("en", FACTS) == (
        "Open alerts (1):\n"
        "- Wet lot L-7, since 11/29 15:00 (acknowledged by Maria)\n"
        "Last 24 h: 1 alerts (Wet lot: 1). Acknowledged: 0. Resolved: 0.\n"
        "\n"
        "Today's lots (2):\n"
        "- L-7 (recepcao, arabica): 12 readings, mean 13.1 %, max 13.8 %"
        " — WET (threshold 12.5 %)\n"
        "- L-8 (recepcao): 4 readings, mean 11.0 %, max 11.4 % — ok (threshold 12.5 %)\n"
        "\n"
        "Service tasks due or overdue (2):\n"
        "- Descascador 1 (desc-1): Troca de peneira — OVERDUE, 512.0 h since the last"
        " service, on 10/01 09:00 (interval 500.0 h)\n"
        "- desc-2: Óleo — DUE, 245.5 h with no service recorded (interval 250.0 h)\n"
        "\n"
        "Devices offline (2):\n"
        "- balanca-1: no data since the agent started\n"
        "- umid-2 (secador): no data since 11/30 06:09 — port: no such file\n"
        "\n"
        "Data delivery backlogs (1):\n"
        "- influx: 1234 records to deliver, last delivery 11/30 05:00 — connection refused"
    )


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "pt-BR",
            "Alertas abertos: nada a relatar\n"
            "Nenhum alerta nas últimas 24 h.\n\n"
            "Lotes de hoje: nada a relatar\n\n"
            "Manutenção vencendo ou atrasada: nada a relatar\n\n"
            "Equipamentos offline: nada a relatar\n\n"
            "Entregas de dados pendentes: nada a relatar",
        ),
        (
            "en",
            "Open alerts: nothing to report\n"
            "No alerts in the last 24 h.\n\n"
            "Today's lots: nothing to report\n\n"
            "Service tasks due or overdue: nothing to report\n\n"
            "Devices offline: nothing to report\n\n"
            "Data delivery backlogs: nothing to report",
        ),
    ],
)
def test_every_section_empty_says_nothing_to_report(lang: str, expected: str) -> None:
    assert digest(lang, EMPTY, open_alert=False) == expected


def test_a_section_that_could_not_be_read_says_so_not_nothing_to_report() -> None:
    facts = DigestFacts(lots=None, tasks=(), offline=None, backlogs=())
    body = digest("pt-BR", facts, open_alert=False)
    assert "Lotes de hoje: indisponível" in body
    assert "Equipamentos offline: indisponível" in body
    assert "Manutenção vencendo ou atrasada: nada a relatar" in body
    assert "Today's lots: unavailable" in digest("en", facts, open_alert=False)


def test_without_facts_the_digest_is_the_alerts_alone() -> None:
    assert digest("en", None) == (
        "Open alerts (1):\n"
        "- Wet lot L-7, since 11/29 15:00 (acknowledged by Maria)\n"
        "Last 24 h: 1 alerts (Wet lot: 1). Acknowledged: 0. Resolved: 0."
    )


def lots(n: int) -> tuple[LotVerdict, ...]:
    return tuple(
        LotVerdict(f"L-{i:02d}", "recepcao", "", 3, 11.0, 11.5, 12.5, i == 7, NOW - i)
        for i in range(n)
    )


def test_long_sections_are_capped_with_how_many_more() -> None:
    facts = DigestFacts(lots=lots(DIGEST_ITEMS + 3), tasks=(), offline=(), backlogs=())
    body = digest("pt-BR", facts, open_alert=False)
    section = body.split("\n\n")[1].split("\n")
    assert section[0] == f"Lotes de hoje ({DIGEST_ITEMS + 3}):"
    assert section[1].startswith("- L-07 ")  # the wet lot first
    assert "ÚMIDO" in section[1]
    assert len(section) == 1 + DIGEST_ITEMS + 1
    assert section[-1] == "- e mais 3"
    sms = digest("en", facts, open_alert=False, channel="sms").split("\n\n")[1].split("\n")
    assert len(sms) == 1 + DIGEST_ITEMS_SMS + 1
    assert sms[-1] == f"- and {DIGEST_ITEMS + 3 - DIGEST_ITEMS_SMS} more"


def test_a_body_over_the_channels_limit_lists_fewer_items() -> None:
    long_name = "&" * 200  # 60 characters shown, 300 once escaped for Telegram
    many = tuple(
        DeviceOffline(f"{long_name}{i}", long_name, NOW, None, long_name) for i in range(10)
    )
    facts = DigestFacts(lots=lots(10), tasks=(), offline=many, backlogs=())
    email = digest("pt-BR", facts, open_alert=False)
    assert email.count("\n- ") == 20  # within the e-mail's budget: all ten of each
    telegram = digest("pt-BR", facts, open_alert=False, channel="telegram")
    assert len(html.escape(telegram)) <= DIGEST_MAX_CHARS["telegram"]
    assert "- e mais " in telegram
    assert len(telegram) < DIGEST_MAX_CHARS["telegram"] / 2  # it is the escaping that counts
    sms = digest("pt-BR", facts, open_alert=False, channel="sms")
    assert len(sms) <= DIGEST_MAX_CHARS["sms"]


def test_values_from_outside_stay_on_one_line_and_are_capped() -> None:
    hostile = "L<b>&\n- Lote falso\x00" + "9" * 100
    facts = DigestFacts(
        lots=(LotVerdict(hostile, "", "", 1, 11.0, 11.0, 12.5, False, NOW),),
        tasks=(),
        offline=(),
        backlogs=(),
    )
    section = digest("pt-BR", facts, open_alert=False).split("\n\n")[1].split("\n")
    assert section[0] == "Lotes de hoje (1):"
    assert len(section) == 2  # the newline did not make a line of its own
    # 60 characters at most: 19 of text, 40 digits and the ellipsis.
    assert section[1].startswith("- L<b>&?- Lote falso?" + "9" * 40 + "…: 1 leituras")


text_values = st.text(max_size=300)


@given(
    lot=text_values,
    device=text_values,
    error=st.none() | text_values,
    sink=text_values,
    channel=st.sampled_from(["email", "sms", "telegram", "ntfy", "whatsapp"]),
)
def test_any_value_renders_within_bounds(
    lot: str, device: str, error: str | None, sink: str, channel: str
) -> None:
    facts = DigestFacts(
        lots=tuple(
            LotVerdict(lot + str(i), lot, lot, 1, 1.0, 1.0, 12.5, True, i) for i in range(30)
        ),
        tasks=(TaskDue(device, device, device, device, True, 1.0, 1.0, None),),
        offline=tuple(DeviceOffline(device, device, 0, None, error) for _ in range(30)),
        backlogs=(SinkBacklog(sink, 5, None, error),),
    )
    body = digest("pt-BR", facts, channel=channel)
    sections = body.split("\n\n")
    assert len(sections) == 5
    limit = DIGEST_MAX_CHARS.get(channel, DIGEST_MAX_CHARS["default"])
    if channel == "telegram":
        assert len(html.escape(body)) <= limit
    elif channel == "ntfy":
        assert len(body.encode()) <= limit
    else:
        assert len(body) <= limit
