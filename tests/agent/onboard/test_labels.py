"""Labels in Portuguese, Spanish and English, and the reading field each one means."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.onboard.labels import cells, field_for, fold, line_pairs


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("Umidade:  11,8 %", [("Umidade", 11.8, "%", "moisture_pct")]),
        ("Humedad ........ 12.4 %", [("Humedad", 12.4, "%", "moisture_pct")]),
        ("MOISTURE     11.8%", [("MOISTURE", 11.8, "%", "moisture_pct")]),
        ("Teor de umidade .. 12,6 %", [("Teor de umidade", 12.6, "%", "moisture_pct")]),
        ("Temperatura = 23,5 °C", [("Temperatura", 23.5, "°C", "temperature_c")]),
        ("Temp 75.2 F", [("Temp", 75.2, "F", "temperature_f")]),
        ("PH: 38,20", [("PH", 38.2, "", "bulk_density_kg_hl")]),
        ("P.H.: 76,4", [("P.H", 76.4, "", "bulk_density_kg_hl")]),
        (
            "Peso hectolítrico: 76,4 kg/hl",
            [("Peso hectolítrico", 76.4, "kg/hl", "bulk_density_kg_hl")],
        ),
        ("Test weight.....76.2 kg/hl", [("Test weight", 76.2, "kg/hl", "bulk_density_kg_hl")]),
        ("Densidad: 742 g/l", [("Densidad", 742.0, "g/l", "bulk_density_g_l")]),
        ("Peso amostra: 250,00 g", [("Peso amostra", 250.0, "g", "sample_mass_g")]),
        ("Weight    1.25 kg", [("Weight", 1.25, "kg", "sample_mass_kg")]),
        ("Amostra: 0042", [("Amostra", 42.0, "", "sample_id")]),
        ("Nº Amostra: 17", [("Nº Amostra", 17.0, "", "sample_id")]),
        ("Muestra Nro: 17", [("Muestra Nro", 17.0, "", "sample_id")]),
        ("Sample ID: A-17", [("Sample ID", None, "", "sample_id")]),
        ("Lote Nº: L7/2025", [("Lote Nº", None, "", "lot")]),
        ("Grão: Café arábica", [("Grão", None, "", "product")]),
        ("Producto: MAIZ", [("Producto", None, "", "product")]),
        ("Data: 12/05/2025 Hora: 14:03", [("Data", None, "", "meter_time")]),
        ("Fecha: 03/06/25", [("Fecha", None, "", "meter_date")]),
        ("Hora: 14:03:22", [("Hora", None, "", "meter_clock")]),
        (
            "Umid.: 11,8 %     Temp.: 24,6 C",
            [("Umid", 11.8, "%", "moisture_pct"), ("Temp", 24.6, "C", "temperature_c")],
        ),
        ("Fator: 1,02", [("Fator", 1.02, "", None)]),
        ("GEHAKA G650", []),
        ("12/05/2025  14:03", []),
        ("--------------------", []),
        ("", []),
    ],
)
def test_labels_and_fields(
    line: str, found: list[tuple[str, float | None, str, str | None]]
) -> None:
    pairs = line_pairs(line)
    assert [(p.label, p.number, p.unit, field_for(p.label, p.kind, p.unit)) for p in pairs] == found


def test_two_columns_need_a_separator_in_each() -> None:
    assert cells("Umidade      11,8 %") == [(0, "Umidade      11,8 %")]
    assert cells("  Lote: A   Amostra: 3") == [(2, "Lote: A"), (12, "Amostra: 3")]


def test_fold() -> None:
    assert fold("  Nº Amostra ") == "no amostra"
    assert fold("P.H.") == "ph"
    assert fold("Grão / Curva") == "grao curva"


@given(st.text(max_size=80))
def test_any_line_never_raises(line: str) -> None:
    for pair in line_pairs(line):
        field_for(pair.label, pair.kind, pair.unit)
