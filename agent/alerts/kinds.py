"""The eight kinds of alert rule, and the rules a site starts with.

A rule is its settings. Each kind extends the model of its ``[alerts.*]`` section in
``agent.config`` (``WetLotParams`` and the like: the keys a site may set, their
defaults and limits) with what a site cannot set: its name, its severity and fixed
tuning. So every setting is declared once, there or here, and checked by that one
declaration: the site file's values by ``agent.config`` (``ConfigError`` naming
``alerts.wet_lot.k``), a rule built in code by its constructor (``RuleError`` naming
``k``). ``from_config`` builds a rule from its section, ``build_rules`` all of a
site's; ``default_rules`` are those of an empty ``[alerts]``.

Rules are frozen pydantic models, not the frozen slotted dataclasses STYLE asks of
parsed config, because extending the config models is what makes the declaration
one. Reading a setting is a plain attribute read, as on a dataclass; derived lookups
are ``cached_property`` (pydantic's private attributes cost microseconds a read, and
``threshold_for`` runs for every moisture reading).

What each kind fires and clears on is in ``conditions``' docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import Field, ValidationError

from coffee_telemetry.agent.alerts.model import Severity
from coffee_telemetry.agent.config import (
    AlertsConfig,
    CalibrationDueParams,
    DeviceSilentParams,
    HullerFaultParams,
    HumidStorageParams,
    Ident,
    MeterDisagreementParams,
    PendingS,
    Positive,
    RepeatS,
    RuleParams,
    SinkBacklogParams,
    WetLotConfig,
    WetLotParams,
)
from coffee_telemetry.agent.errors import RuleError

#: ``device_silent`` limits per driver, in seconds, when a rule does not override them.
#: Ticket printers (``moisture.ticket``) are absent: they speak when someone measures.
#: Hullers are watched by ``huller_fault``.
DEFAULT_SILENT_S: Mapping[str, float] = {
    "moisture.tesma": 10.0,
    "scale.mtsics": 30.0,
    "scale.toledo_continuous": 30.0,
    "scale.ascii": 30.0,
}


class _RuleBase(RuleParams):
    """What every kind has: a name (a topic level), a severity, and which inputs it reads.

    A kind's first base is its section's settings model, if it has one.
    """

    #: The kind (``wet_lot``...); a snapshot's subjects go back only to a rule of it.
    kind: ClassVar[str]
    #: The measurements whose readings it reads.
    measurements: ClassVar[frozenset[str]]
    #: Whether ticks can start its alerts (open alerts see every tick regardless).
    on_ticks: ClassVar[bool]

    if not TYPE_CHECKING:
        # pydantic refuses a value with ValidationError; code building a rule gets
        # RuleError naming the rule and the key instead. Hidden from type checkers,
        # which then keep the keyword signature pydantic derives from the fields.
        def __init__(self, **settings):
            try:
                super().__init__(**settings)
            except ValidationError as exc:
                raise _refusal(type(self), settings, exc) from None

    @classmethod
    def from_config(cls, section: RuleParams) -> Self:
        """This kind of rule with the settings of its ``[alerts.*]`` section.

        Raises:
            TypeError: ``section`` is not this kind's section.
        """
        params = cls.__bases__[0]
        if not (issubclass(params, RuleParams) and isinstance(section, params)):
            raise TypeError(f"{cls.__name__} is not built from {type(section).__name__}")
        return cls(**{key: getattr(section, key) for key in params.model_fields})


def _refusal(
    kind: type[_RuleBase], settings: Mapping[str, object], exc: ValidationError
) -> RuleError:
    first = exc.errors(include_url=False)[0]
    key = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "string_pattern_mismatch":
        message = "must be 1-48 lowercase letters, digits, - or _ (it is part of MQTT topics)"
    name = settings.get("name", kind.model_fields["name"].default)
    return RuleError(message, rule=str(name), key=key)


class WetLotRule(WetLotParams, _RuleBase):
    """A lot too wet to store; ``WetLotParams`` holds the settings a site may change.

    Attributes:
        name: Rule name (MQTT topic level and ``rule`` tag).
        severity: Severity of its alerts.
        mean_min_readings: The mean counts once the lot has this many readings.
        forget_after_s: A lot with no reading for this long is forgotten.
    """

    kind: ClassVar[str] = "wet_lot"
    measurements: ClassVar[frozenset[str]] = frozenset({"moisture"})
    on_ticks: ClassVar[bool] = False

    name: Ident = "wet_lot"
    severity: Severity = Severity.CRITICAL
    mean_min_readings: int = Field(default=1, ge=1)
    forget_after_s: Positive = 7 * 86400.0

    @cached_property
    def _by_product(self) -> Mapping[str, float]:
        return {product.casefold(): pct for product, pct in self.thresholds_pct.items()}

    def threshold_for(self, product: str) -> float:
        """The moisture threshold (%) for ``product``."""
        return self._by_product.get(product.casefold(), self.default_threshold_pct)


class DeviceSilentRule(DeviceSilentParams, _RuleBase):
    """A device that sent no valid frame for too long (``DeviceSilentParams``: limits).

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
    """

    kind: ClassVar[str] = "device_silent"
    measurements: ClassVar[frozenset[str]] = frozenset()
    on_ticks: ClassVar[bool] = True

    name: Ident = "device_silent"
    severity: Severity = Severity.WARNING
    pending_s: PendingS = 0.0

    @cached_property
    def _by_driver(self) -> Mapping[str, float | None]:
        return {**DEFAULT_SILENT_S, **self.silent_s_by_driver}

    def limit_s(self, device: str, driver: str) -> float | None:
        """The silence limit for ``device`` of ``driver`` (None: not watched)."""
        if device in self.silent_s_by_device:
            return self.silent_s_by_device[device]
        return self._by_driver.get(driver)


class HullerFaultRule(HullerFaultParams, _RuleBase):
    """A huller that stopped answering, jammed, or whose motor input disagrees with its hours.

    ``HullerFaultParams`` holds ``offline_s``, ``jam_s`` and ``repeat_s``.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long a condition must hold before the alert fires.
        driver: The health registry's driver name for hullers.
        error_count: ``comms`` also fires after this many errors within ``error_window_s``.
        error_window_s: The error counting window.
        wiring_h: ``wiring`` fires after the hours rose this much with the input off.
        max_gap_s: Readings further apart than this are not compared (``wiring``).
    """

    kind: ClassVar[str] = "huller_fault"
    measurements: ClassVar[frozenset[str]] = frozenset({"huller"})
    on_ticks: ClassVar[bool] = True

    name: Ident = "huller_fault"
    severity: Severity = Severity.CRITICAL
    pending_s: PendingS = 0.0
    driver: str = "counter.autonics_ct"
    error_count: int = Field(default=3, ge=1)
    error_window_s: Positive = 60.0
    wiring_h: Positive = 0.05
    max_gap_s: Positive = 60.0


class ServiceRule(_RuleBase):
    """A huller service task due (``level="due"``) or overdue (``level="overdue"``).

    ``[alerts.service]`` makes two: ``service_due`` and ``service_overdue``.

    Attributes:
        name: Rule name (``service_due``, or ``service_overdue`` for the second one).
        level: ``due`` holds while the task is due or overdue; ``overdue`` while overdue.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    kind: ClassVar[str] = "service"
    measurements: ClassVar[frozenset[str]] = frozenset({"maintenance_status"})
    on_ticks: ClassVar[bool] = False

    name: Ident = "service_due"
    level: Literal["due", "overdue"] = "due"
    severity: Severity = Severity.WARNING
    pending_s: PendingS = 0.0
    repeat_s: RepeatS = None


class SinkBacklogRule(SinkBacklogParams, _RuleBase):
    """A sink that has not delivered for too long while records wait for it.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
        min_backlog: Fires only while at least this many records wait.
    """

    kind: ClassVar[str] = "sink_backlog"
    measurements: ClassVar[frozenset[str]] = frozenset()
    on_ticks: ClassVar[bool] = True

    name: Ident = "sink_backlog"
    severity: Severity = Severity.WARNING
    pending_s: PendingS = 0.0
    min_backlog: int = Field(default=1, ge=1)


class HumidStorageRule(HumidStorageParams, _RuleBase):
    """A storage sensor whose relative humidity stays at or above a threshold.

    ``HumidStorageParams`` holds ``threshold_pct``, ``hysteresis_pct``, ``pending_s``
    (how long: 6 h by default) and ``repeat_s``. One subject per sensor (its device id);
    its storage area is in the alert's data.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
    """

    kind: ClassVar[str] = "humid_storage"
    measurements: ClassVar[frozenset[str]] = frozenset({"climate"})
    on_ticks: ClassVar[bool] = False

    name: Ident = "humid_storage"
    severity: Severity = Severity.WARNING


class CalibrationDueRule(CalibrationDueParams, _RuleBase):
    """A meter whose calibration is due within ``warn_days`` days, or past due.

    Reads the ``calibration_status`` readings (``agent.evidence.meters``): one subject
    per meter (its device id). ``CalibrationDueParams`` holds ``warn_days`` and
    ``repeat_s``.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
    """

    kind: ClassVar[str] = "calibration_due"
    measurements: ClassVar[frozenset[str]] = frozenset({"calibration_status"})
    on_ticks: ClassVar[bool] = False

    name: Ident = "calibration_due"
    severity: Severity = Severity.WARNING
    pending_s: PendingS = 0.0


class MeterDisagreementRule(MeterDisagreementParams, _RuleBase):
    """Two meters reading one lot further apart than ``tolerance_pp`` within ``window_s``.

    One subject per lot (its code), from ``moisture`` readings with a lot tag.

    Attributes:
        name: Rule name.
        severity: Severity of its alerts.
        pending_s: How long the condition must hold before the alert fires.
    """

    kind: ClassVar[str] = "meter_disagreement"
    measurements: ClassVar[frozenset[str]] = frozenset({"moisture"})
    on_ticks: ClassVar[bool] = False

    name: Ident = "meter_disagreement"
    severity: Severity = Severity.WARNING
    pending_s: PendingS = 0.0


#: A configured rule.
Rule = (
    WetLotRule
    | DeviceSilentRule
    | HullerFaultRule
    | ServiceRule
    | SinkBacklogRule
    | HumidStorageRule
    | CalibrationDueRule
    | MeterDisagreementRule
)


def build_rules(cfg: AlertsConfig) -> list[Rule]:
    """The rules of a site's ``[alerts]`` section, in evaluation order."""
    rules: list[Rule] = []
    if cfg.wet_lot.enabled:
        rules.append(WetLotRule.from_config(cfg.wet_lot))
    if cfg.device_silent.enabled:
        rules.append(DeviceSilentRule.from_config(cfg.device_silent))
    if cfg.huller_fault.enabled:
        rules.append(HullerFaultRule.from_config(cfg.huller_fault))
    if cfg.service.enabled:
        rules.append(ServiceRule())
        rules.append(
            ServiceRule(
                name="service_overdue",
                level="overdue",
                severity=Severity.CRITICAL,
                repeat_s=cfg.service.overdue_repeat_s,
            )
        )
    if cfg.sink_backlog.enabled:
        rules.append(SinkBacklogRule.from_config(cfg.sink_backlog))
    if cfg.humid_storage.enabled:
        rules.append(HumidStorageRule.from_config(cfg.humid_storage))
    if cfg.calibration_due.enabled:
        rules.append(CalibrationDueRule.from_config(cfg.calibration_due))
    if cfg.meter_disagreement.enabled:
        rules.append(MeterDisagreementRule.from_config(cfg.meter_disagreement))
    return rules


def default_rules() -> tuple[Rule, ...]:
    """One rule of each kind with its defaults (``service_overdue`` critical, daily repeat)."""
    return tuple(build_rules(AlertsConfig()))


def wet_lot_rule(section: WetLotConfig) -> WetLotRule:
    """The wet-lot rule of ``[alerts.wet_lot]`` (also what the pages' wet badges follow)."""
    return WetLotRule.from_config(section)
