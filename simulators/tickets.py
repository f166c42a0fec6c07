"""Ticket printers with other layouts than the Gehaka-style one of ``moisture.py``.

No manual documents these meters' tickets (device-protocols.md §1.1, §1.3, §1.5), so
the onboarding tools must read layouts nobody wrote down. These are the layouts the
tests hold them to: other languages and label spellings, other orders, dot leaders,
two columns, extra lines (titles, rules, signatures, unknown fields), CR-only and
LF-only lines, latin-1 text, with and without ESC/POS and form feeds. They are
invented for the tests, not copied from any meter.

``render(layout, sample)`` prints one ticket; ``LayoutMeterSim`` prints them on a pty
with ``sent`` recording what a correct reading of each is (``expected``), like the
other simulators. The driver has no encoder for arbitrary layouts, so, unlike the
other simulators, these are not the driver run backwards; ``expected`` is written
from the sample's values, independently of any parser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Mapping

from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["LAYOUTS", "LayoutMeterSim", "Sample", "TicketLayout", "random_sample", "render"]


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """What one measurement printed.

    Attributes:
        moisture_pct: One decimal.
        temperature_c: One decimal.
        density_kg_hl: Two decimals.
        mass_g: One decimal.
        sample_id: One word.
        product: Text (may have spaces and accents).
        lot: One word.
        date: ``DD/MM/YYYY``.
        time: ``HH:MM`` or ``HH:MM:SS``.
    """

    moisture_pct: float
    temperature_c: float
    density_kg_hl: float
    mass_g: float
    sample_id: str
    product: str
    lot: str
    date: str
    time: str


@dataclasses.dataclass(frozen=True, slots=True)
class TicketLayout:
    """How a meter prints its ticket.

    Attributes:
        name: The layout's name (a test id).
        title: Lines before the fields (``{n}``: a ticket counter).
        rows: Lines of fields; each row names one or two cells (two columns).
        labels: Label per cell name.
        sep: Between label and value (``": "``, ``" = "``, ``" "``).
        leader: Pad labels with dots to this width (dot leaders), 0: none.
        column_width: Width of the first column in two-column rows.
        footer: Lines after the fields.
        decimal_comma: ``11,8`` rather than ``11.8``.
        line_ending: The line terminator.
        escpos: Wrap in ``ESC @`` ... cut, with bold on the title.
        form_feed: End with FF.
        units: Unit after each numeric cell (``moisture``: ``" %"``).
        date_order: ``dmy`` (12/05/2025) or ``iso`` (2025-05-12).
        reads: Which sample fields a reading has (the expected reading's keys).
    """

    name: str
    title: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: Mapping[str, str]
    sep: str = ": "
    leader: int = 0
    column_width: int = 24
    footer: tuple[str, ...] = ()
    decimal_comma: bool = True
    line_ending: bytes = b"\r\n"
    escpos: bool = False
    form_feed: bool = True
    units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    date_order: str = "dmy"
    reads: tuple[str, ...] = ()


def _number(value: float, decimals: int, comma: bool) -> str:
    text = f"{value:.{decimals}f}"
    return text.replace(".", ",") if comma else text


def _cell(layout: TicketLayout, name: str, sample: Sample) -> str:
    comma = layout.decimal_comma
    date = sample.date
    if layout.date_order == "iso":
        day, month, year = date.split("/")
        date = f"{year}-{month}-{day}"
    values = {
        "moisture": _number(sample.moisture_pct, 1, comma),
        "temperature": _number(sample.temperature_c, 1, comma),
        "density": _number(sample.density_kg_hl, 2, comma),
        "mass": _number(sample.mass_g, 1, comma),
        "sample": sample.sample_id,
        "product": sample.product,
        "lot": sample.lot,
        "date": date,
        "time": sample.time,
        "datetime": f"{date}  {sample.time}",
        "factor": _number(1.02, 2, comma),
        "operator": "__________",
    }
    label = layout.labels[name]
    value = values[name] + layout.units.get(name, "")
    if layout.leader:
        return f"{label} ".ljust(layout.leader, ".") + f"{layout.sep}{value}"
    return f"{label}{layout.sep}{value}"


def render(layout: TicketLayout, sample: Sample, *, number: int = 1) -> bytes:
    """One ticket of ``layout`` for ``sample`` (``number`` fills ``{n}`` in the title)."""
    lines = [line.format(n=number) for line in layout.title]
    for row in layout.rows:
        cells = [_cell(layout, name, sample) for name in row]
        if len(cells) == 1:
            lines.append(cells[0])
        else:
            lines.append(cells[0].ljust(layout.column_width) + "   " + cells[1])
    lines += layout.footer
    body = b"".join(line.encode("latin-1") + layout.line_ending for line in lines)
    if layout.escpos:
        title = len(layout.title)
        head = b"".join(line.encode("latin-1") + layout.line_ending for line in lines[:title])
        rest = body[len(head) :]
        body = b"\x1b@\x1bE\x01" + head + b"\x1bE\x00" + rest + b"\x1bd\x03\x1dVB\x00"
    return body + (b"\x0c" if layout.form_feed else b"")


def expected(layout: TicketLayout, sample: Sample) -> dict[str, float | str]:
    """The fields and tags a correct reading of this ticket has."""
    date = sample.date
    if layout.date_order == "iso":
        day, month, year = date.split("/")
        date = f"{year}-{month}-{day}"
    every: dict[str, float | str] = {
        "moisture_pct": sample.moisture_pct,
        "temperature_c": sample.temperature_c,
        "bulk_density_kg_hl": sample.density_kg_hl,
        "sample_mass_g": sample.mass_g,
        "sample_id": sample.sample_id,
        "product": sample.product,
        "lot": sample.lot,
        "meter_time": f"{date} {sample.time}",
        "meter_date": date,
        "meter_clock": sample.time,
    }
    return {key: every[key] for key in layout.reads}


def random_sample(rng: random.Random, index: int, *, products: tuple[str, ...]) -> Sample:
    """A plausible sample, numbered ``index``."""
    return Sample(
        moisture_pct=round(rng.uniform(9.0, 16.0), 1),
        temperature_c=round(rng.uniform(15.0, 35.0), 1),
        density_kg_hl=round(rng.uniform(35.0, 80.0), 2),
        mass_g=round(rng.uniform(200.0, 300.0), 1),
        sample_id=f"{index:04d}",
        product=rng.choice(products),
        lot=f"L-{rng.randint(1, 999):04d}",
        date=f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/2025",
        time=f"{rng.randint(6, 18):02d}:{rng.randint(0, 59):02d}",
    )


LAYOUTS: dict[str, TicketLayout] = {
    # Spanish, dot leaders, date and time labelled on one line, ruled footer.
    "es_dot_leaders": TicketLayout(
        name="es_dot_leaders",
        title=("HUMEDIMETRO DIGITAL HD-{n}",),
        rows=(
            ("datetime",),
            ("product",),
            ("sample",),
            ("moisture",),
            ("temperature",),
            ("density",),
        ),
        labels={
            "datetime": "Fecha/Hora",
            "product": "Producto",
            "sample": "Muestra Nro",
            "moisture": "Humedad",
            "temperature": "Temperatura",
            "density": "Peso hectolitrico",
        },
        leader=20,
        sep=": ",
        footer=("------------------------",),
        decimal_comma=False,
        units={"moisture": " %", "temperature": " C", "density": " kg/hl"},
        reads=(
            "meter_time",
            "product",
            "sample_id",
            "moisture_pct",
            "temperature_c",
            "bulk_density_kg_hl",
        ),
    ),
    # English, CR only, no FF and no ESC/POS (tickets end by a pause), label then
    # spaces, ISO dates, another order.
    "en_cr_only": TicketLayout(
        name="en_cr_only",
        title=("GRAIN MOISTURE TESTER",),
        rows=(("sample",), ("product",), ("moisture",), ("temperature",), ("mass",), ("datetime",)),
        labels={
            "sample": "Sample ID",
            "product": "Grain",
            "moisture": "Moisture",
            "temperature": "Temp",
            "mass": "Weight",
            "datetime": "Date",
        },
        sep="    ",
        decimal_comma=False,
        line_ending=b"\r",
        form_feed=False,
        units={"moisture": "%", "temperature": " C", "mass": " g"},
        date_order="iso",
        reads=(
            "sample_id",
            "product",
            "moisture_pct",
            "temperature_c",
            "sample_mass_g",
            "meter_time",
        ),
    ),
    # Portuguese with accents in labels and values (latin-1), LF only, ESC/POS bold,
    # date and time on separate lines, "Nº" labels.
    "pt_latin1_lf": TicketLayout(
        name="pt_latin1_lf",
        title=("Laboratório de Classificação", "Medidor de umidade"),
        rows=(
            ("product",),
            ("lot",),
            ("sample",),
            ("moisture",),
            ("temperature",),
            ("density",),
            ("date",),
            ("time",),
        ),
        labels={
            "product": "Grão",
            "lot": "Lote Nº",
            "sample": "Nº amostra",
            "moisture": "Umidade (%)",
            "temperature": "Temperatura (°C)",
            "density": "Peso hectolítrico",
            "date": "Data",
            "time": "Hora",
        },
        line_ending=b"\n",
        escpos=True,
        reads=(
            "product",
            "lot",
            "sample_id",
            "moisture_pct",
            "temperature_c",
            "bulk_density_kg_hl",
            "meter_date",
            "meter_clock",
        ),
    ),
    # Two columns, abbreviated labels, unknown fields (a factor, a signature line).
    "two_columns": TicketLayout(
        name="two_columns",
        title=("COOPERATIVA - ANALISE DE UMIDADE",),
        rows=(
            ("date", "time"),
            ("product", "lot"),
            ("moisture", "temperature"),
            ("density", "sample"),
            ("factor",),
            ("operator",),
        ),
        labels={
            "date": "Data",
            "time": "Hora",
            "product": "Produto",
            "lot": "Lote",
            "moisture": "Umid.",
            "temperature": "Temp.",
            "density": "PH",
            "sample": "Amostra",
            "factor": "Fator",
            "operator": "Operador",
        },
        units={"moisture": " %", "temperature": " C"},
        reads=(
            "meter_date",
            "meter_clock",
            "product",
            "lot",
            "moisture_pct",
            "temperature_c",
            "bulk_density_kg_hl",
            "sample_id",
        ),
    ),
    # Extra lines: rules above and below, a blank line, an observation line; fields
    # in yet another order with spelled-out labels; ends by ESC @ of the next job only.
    "extra_lines": TicketLayout(
        name="extra_lines",
        title=("================================", "  SECADOR 3 - LAUDO DE AMOSTRA", "=" * 32, ""),
        rows=(("lot",), ("sample",), ("mass",), ("moisture",), ("temperature",)),
        labels={
            "lot": "Lote",
            "sample": "Amostra",
            "mass": "Massa",
            "moisture": "Teor de umidade",
            "temperature": "Temperatura",
        },
        sep=" .. ",
        footer=("", "Observacao: ______________", "=" * 32),
        escpos=True,
        form_feed=False,
        units={"mass": " g", "moisture": " %", "temperature": " C"},
        reads=("lot", "sample_id", "sample_mass_g", "moisture_pct", "temperature_c"),
    ),
}


class LayoutMeterSim:
    """A meter printing ``layout`` tickets on a pty.

    Args:
        port: Where to write (opened by the caller).
        layout: The ticket layout.
        interval_s: Time between tickets in ``run()``.
        seed: Seed of the samples.
        products: Products to pick from.

    Attributes:
        sent: For each ticket written whole, what its reading must hold.
    """

    def __init__(
        self,
        port: PtyPort,
        layout: TicketLayout,
        *,
        interval_s: float = 3.0,
        seed: int | None = None,
        products: tuple[str, ...] = ("CAFE", "CAFE ARABICA", "MILHO"),
    ) -> None:
        self.port = port
        self.layout = layout
        self.interval_s = interval_s
        self.products = products
        self.sent: list[dict[str, float | str]] = []
        self._rng = random.Random(seed)
        self._count = 0

    def emit(self) -> bytes:
        """Print one ticket now; returns its bytes."""
        self._count += 1
        sample = random_sample(self._rng, self._count, products=self.products)
        ticket = render(self.layout, sample, number=self._count)
        if self.port.write(ticket) == len(ticket):
            self.sent.append(expected(self.layout, sample))
        return ticket

    async def run(self, count: int | None = None) -> None:
        """Print a ticket every ``interval_s`` (the first at once), ``count`` times or for ever."""
        while count is None or self._count < count:
            self.emit()
            await asyncio.sleep(self.interval_s)
