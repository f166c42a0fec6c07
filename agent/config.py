"""Site configuration: one TOML file, validated once at start.

``load_config(path)`` parses the file into frozen models; any problem raises
``ConfigError`` listing every offending key in dotted form
(``devices[1].serial.baudrate: Input should be 1200, 2400, ...``) so the
process refuses to start before it connects to anything. Secrets never live
in the file: ``password_env``/``token_env`` name environment variables and
``password_file``/``token_file`` name files (systemd credentials, Docker
secrets); they are read here, once.

Identifiers that end up in MQTT topics (site, device, station, the topic
prefix) are restricted to lowercase ASCII letters, digits, ``-`` and ``_``,
so no configuration can create wildcard or multi-level topic injection.

This module is long on purpose: it is the one declaration of every key the site
file may hold (its type, default and limits), read top to bottom in the order of
the README's configuration table. Split by section, a reader would have to hunt
for where a key lives; whole, it is the file's schema.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.notify.config import NotifyConfig
from coffee_telemetry.agent.passwords import hash_problem
from coffee_telemetry.drivers import profiles
from coffee_telemetry.drivers.climate_modbus_th import RegisterMap
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.modbus_rtu import FunctionCode
from coffee_telemetry.drivers.moisture_tesma import TesmaParser
from coffee_telemetry.drivers.moisture_ticket import FieldPattern, TicketOptions, TicketParser
from coffee_telemetry.drivers.scale_ascii import AsciiScaleParser
from coffee_telemetry.drivers.scale_toledo import ToledoParser
from coffee_telemetry.drivers.stream import ClocklessDriver, StreamDriver

#: Identifiers used in topics and tags.
IDENT = r"^[a-z0-9][a-z0-9_-]{0,47}$"
#: Topic prefix: one or more identifier segments joined by ``/``.
PREFIX = r"^[a-z0-9][a-z0-9_-]{0,47}(/[a-z0-9][a-z0-9_-]{0,47}){0,3}$"

Ident = Annotated[str, Field(pattern=IDENT)]

#: Ids the agent uses for its own topics and readings.
RESERVED_IDS = frozenset({"agent", "alerts", "cmd"})

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_regex(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


#: Where systemd puts a unit's ``LoadCredential=`` files; a ``*_file`` path may start with it.
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
_CREDENTIALS_PREFIX = re.compile(r"^\$(\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY)(?=/|$)")
#: Least strength of an API token, in bits.
MIN_TOKEN_BITS = 128
#: Fewest different characters in an API token (``change-me-change-me...`` has 8).
MIN_TOKEN_DISTINCT = 10


def token_bits(token: str) -> float:
    """An upper bound of a token's strength: its length times log2 of its alphabet.

    The alphabet is guessed from the characters used: hexadecimal (16), or the sum of
    lowercase (26), uppercase (26), digits (10) and other printable ASCII (33).
    """
    if not token:
        return 0.0
    if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", token):
        alphabet = 16
    else:
        alphabet = sum(
            size
            for present, size in (
                (any("a" <= c <= "z" for c in token), 26),
                (any("A" <= c <= "Z" for c in token), 26),
                (any("0" <= c <= "9" for c in token), 10),
                (any(not c.isascii() or not c.isalnum() for c in token), 33),
            )
            if present
        )
    return len(token) * math.log2(alphabet)


def token_problem(token: str) -> str | None:
    """Why ``token`` is too weak to be an API token (None: it is strong enough)."""
    bits = token_bits(token)
    if bits < MIN_TOKEN_BITS or len(set(token)) < MIN_TOKEN_DISTINCT:
        return (
            f"the API token is too weak (about {bits:.0f} bits, {len(set(token))} different"
            f" characters; at least {MIN_TOKEN_BITS} bits and {MIN_TOKEN_DISTINCT} different"
            " characters): make one with `openssl rand -hex 32`"
        )
    return None


def public_url(url: str) -> str:
    """``url`` fit to print: user name and password in it replaced by ``***``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@", r"\1***@", url)


class _Secrets:
    """Reads the secrets the file names (environment or files), collecting problems.

    A ``*_file`` path may start with ``$CREDENTIALS_DIRECTORY`` (or
    ``${CREDENTIALS_DIRECTORY}``): where systemd's ``LoadCredential=`` puts the unit's
    secret files. Every file read is remembered (``files``) so ``check-config`` can
    warn when others may read it.
    """

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.files: dict[str, Path] = {}

    def path(self, key: str, file: Path) -> Path | None:
        text = str(file)
        m = _CREDENTIALS_PREFIX.match(text)
        if m is None:
            return file
        base = os.environ.get(CREDENTIALS_DIRECTORY)
        if not base:
            self.problems.append(
                (key, f"{m.group(0)} is not set (it is, under systemd, with LoadCredential=)")
            )
            return None
        return Path(base + text[m.end() :])

    def read_file(self, key: str, file: Path) -> SecretStr | None:
        path = self.path(key, file)
        if path is None:
            return None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problems.append((key, f"cannot read {path}: {exc.strerror}"))
            return None
        except UnicodeDecodeError:
            self.problems.append((key, f"{path} is not UTF-8 text"))
            return None
        self.files[key] = path
        return SecretStr(value)

    def read(self, key: str, env: str | None, file: Path | None) -> SecretStr | None:
        if env is not None:
            value = os.environ.get(env)
            if value is None:
                self.problems.append((f"{key}_env", f"environment variable {env} is not set"))
                return None
            return SecretStr(value)
        if file is not None:
            return self.read_file(f"{key}_file", file)
        return None

    def token(self, key: str, env: str | None, file: Path | None) -> SecretStr | None:
        value = self.read(key, env, file)
        if value is not None and (problem := token_problem(value.get_secret_value())):
            self.problems.append((f"{key}_env" if env is not None else f"{key}_file", problem))
        return value

    def tls(self, key: str, tls: TlsConfig | None) -> TlsConfig | None:
        if tls is None:
            return None
        paths: dict[str, Path | None] = {}
        for name in ("ca_file", "cert_file", "key_file"):
            given: Path | None = getattr(tls, name)
            path = None if given is None else self.path(f"{key}.{name}", given)
            if path is not None:
                try:
                    with path.open("rb"):
                        pass
                except OSError as exc:
                    self.problems.append((f"{key}.{name}", f"cannot read {path}: {exc.strerror}"))
                if name == "key_file":
                    self.files[f"{key}.{name}"] = path
            paths[name] = path
        return tls.model_copy(update=paths)


class SiteConfig(_Model):
    """``[site]``: who this agent is."""

    id: Ident
    name: str = ""
    timezone: str = "America/Sao_Paulo"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. 'America/Sao_Paulo')") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (what "today" means for daily totals)."""
        return ZoneInfo(self.timezone)


class TimeGpsConfig(_Model):
    """``[agent.time_gps]``: a GPS receiver whose NMEA time is a time source (``gps``).

    Attributes:
        port: Its serial port, by a stable path (``/dev/serial/by-id/...``).
        baud: Its speed (most receivers: 9600; older ones 4800).
        interval_s: How often its time is offered to the agent's clock (under the five
            minutes after which a quiet source no longer counts as answering).
    """

    port: str = Field(min_length=1)
    baud: Literal[4800, 9600, 19200, 38400, 57600, 115200] = 9600
    interval_s: float = Field(default=60.0, ge=1, le=240)


class AgentSection(_Model):
    """``[agent]``: process-wide settings."""

    data_dir: Path = Path("/var/lib/coffee-telemetry")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    status_interval_s: float = Field(default=60.0, gt=0, le=3600)
    #: Minutes to wait for a trusted time source before the estimate is adopted
    #: (readings then carry ``time_quality = "estimated"``; ``agent.timekeeping``).
    time_trust_timeout_min: float = Field(default=10.0, gt=0, le=1440)
    #: Time sources trusted (``agent.timekeeping``): ``ntp``, ``rtc`` (a battery clock the
    #: kernel read at boot), ``user`` (set from the dashboard), ``system`` (the wall
    #: clock as it is: containers and VMs whose host keeps time), ``gps`` (a receiver's
    #: NMEA time, ``[agent.time_gps]``) and ``modem`` (the GSM network's time from the
    #: notifications modem, ``[notify.sms]``).
    time_sources: tuple[Literal["ntp", "rtc", "user", "system", "gps", "modem"], ...] = (
        "ntp",
        "rtc",
        "user",
    )
    #: The GPS receiver of the ``gps`` time source.
    time_gps: TimeGpsConfig | None = None
    #: ``auto``: uvloop when installed (the ``fast`` extra), else asyncio's own loop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: ``text`` for journald; ``json``: one JSON object per line (``agent.logs``).
    log_format: Literal["text", "json"] = "text"
    #: Settings that wear an SD card less, where the file leaves them unset (``STORAGE_PROFILES``).
    storage_profile: Literal["default", "sd-card"] = "default"

    @model_validator(mode="after")
    def _gps_source(self) -> AgentSection:
        if "gps" in self.time_sources and self.time_gps is None:
            raise ValueError(
                "time_sources has 'gps': say where the receiver is, [agent.time_gps] port"
            )
        return self


#: What each ``[agent] storage_profile`` sets, by section and key, unless the file sets it.
#: ``sd-card``: the outbox gathers a second of readings into one commit (each is accepted up
#: to 1 s later, still only once on disk), fsyncs every 10 s instead of every second (a
#: power cut may lose the last 10 s of readings; a crash loses nothing accepted) and
#: checkpoints every 60 s, writes delivered cursors every 10 s (a crash makes a sink resend
#: up to 10 s), and stores records packed in 512-byte pages; the history is written once a
#: minute (a crash or a power cut may lose its last minute; the outbox and the sinks still
#: have those readings) in 1 KiB pages, and the lot records take a batch every 10 s (what
#: the lot pages show is up to 10 s late). Page sizes apply to stores created with the
#: profile.
#: README, "Cartão SD", has the measured writes of each.
STORAGE_PROFILES: dict[str, dict[str, dict[str, object]]] = {
    "default": {},
    "sd-card": {
        "outbox": {
            "sync_interval_s": 10.0,
            "commit_delay_s": 1.0,
            "cursor_flush_s": 10.0,
            "checkpoint_interval_s": 60.0,
            "page_size": 512,
            "compress": True,
        },
        "history": {"flush_interval_s": 60.0, "page_size": 1024},
        "lots": {"flush_interval_s": 10.0},
    },
}


def apply_storage_profile(doc: dict[str, object]) -> dict[str, object]:
    """``doc`` (a site file, parsed) with its storage profile's settings where it has none.

    Keys the file sets win; a malformed ``[agent]`` or section is left for validation to
    refuse.
    """
    agent = doc.get("agent")
    profile = agent.get("storage_profile", "default") if isinstance(agent, dict) else "default"
    settings = STORAGE_PROFILES.get(profile) if isinstance(profile, str) else None
    if not settings:
        return doc
    out = dict(doc)
    for section, values in settings.items():
        given = out.get(section, {})
        if isinstance(given, dict):
            out[section] = {**values, **given}
    return out


class OutboxConfig(_Model):
    """``[outbox]``: the durable local log."""

    path: Path | None = None
    max_mb: float = Field(default=512.0, gt=0)
    synchronous: Literal["full", "normal"] = "normal"
    sync_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Seconds a commit waits for more readings to share it (fewer writes, later accept).
    commit_delay_s: float = Field(default=0.0, ge=0, le=5)
    #: Longest a delivered cursor waits in memory for a commit to ride (a crash resends that).
    cursor_flush_s: float = Field(default=0.25, gt=0, le=60)
    #: Seconds delivered records stay before a cursor write deletes them (0: every one).
    prune_interval_s: float = Field(default=0.0, ge=0, le=3600)
    #: Seconds between checkpoints in ``normal`` mode (default: every ``sync_interval_s``).
    checkpoint_interval_s: float | None = Field(default=None, gt=0, le=3600)
    #: SQLite page size of an outbox or maintenance store created from now on.
    page_size: Literal[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] | None = None
    #: Store records deflated (about half the bytes; ``agent.outbox.schema.pack``).
    compress: bool = False


class TlsConfig(_Model):
    """``[mqtt.tls]``, ``[influx.tls]``: TLS for a client connection (``agent.tls``).

    Attributes:
        ca_file: The CA that signed the server's certificate (default: the system's CAs).
        cert_file: A client certificate to show (mutual TLS).
        key_file: Its private key, when not in ``cert_file``.
        insecure: Do not check the server's certificate or name (test benches only:
            warned at start and shown in health).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class HomeAssistantDeviceInfo(_Model):
    """``[mqtt.homeassistant_devices.<id>]``: what Home Assistant shows of a device."""

    manufacturer: str | None = Field(default=None, min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    serial_number: str | None = Field(default=None, min_length=1, max_length=64)


class MqttConfig(_Model):
    """``[mqtt]``: the MQTT sink."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: Annotated[str, Field(pattern=PREFIX)] = "coffee"
    client_id: str | None = Field(default=None, min_length=1, max_length=64)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    batch_size: int = Field(default=100, ge=1, le=1000)
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Longest wait between reconnect attempts (a LAN broker: seconds; a remote one: more).
    reconnect_max_s: float = Field(default=2.0, gt=0, le=600)
    #: Home Assistant MQTT discovery documents (``agent.sinks.homeassistant``).
    homeassistant_discovery: bool = False
    homeassistant_prefix: Annotated[str, Field(pattern=PREFIX)] = "homeassistant"
    #: Device registry details by device or huller id.
    homeassistant_devices: dict[Ident, HomeAssistantDeviceInfo] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_secret(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self


class InfluxConfig(_Model):
    """``[influx]``: the InfluxDB sink (v1 HTTP API or v2 API)."""

    enabled: bool = False
    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    database: str = Field(default="coffee", min_length=1)
    retention_policy: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None
    org: str | None = None
    bucket: str | None = None
    batch_size: int = Field(default=5000, ge=1, le=5000)
    flush_interval_s: float = Field(default=1.0, ge=0, le=60)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    gzip: bool = True
    create_database: bool = False
    tls: TlsConfig | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_needs_https(self) -> InfluxConfig:
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("[influx.tls] is set but url is not https://")
        return self

    @model_validator(mode="after")
    def _v2_needs(self) -> InfluxConfig:
        if self.enabled and self.api == "v2":
            missing = [k for k in ("org", "bucket") if not getattr(self, k)]
            if not (self.token_env or self.token_file):
                missing.append("token_env or token_file")
            if missing:
                raise ValueError(f"api = 'v2' needs {', '.join(missing)}")
        return self


class NatsConfig(_Model):
    """``[sinks.nats]``: the JetStream sink to a central NATS cluster (``agent.sinks.nats``).

    Credentials come from files: a ``.creds`` file (``creds_file``, NATS JWT accounts)
    or a user name with ``password_file`` (or ``password_env``).
    """

    enabled: bool = True
    servers: tuple[str, ...] = Field(min_length=1)
    subject_prefix: Ident = "coffee"
    #: The stream expected to store the messages (checked on each PubAck).
    stream: str | None = Field(default="COFFEE", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    creds_file: Path | None = None
    tls: TlsConfig | None = None
    batch_size: int = Field(default=100, ge=1, le=1000)
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Longest wait between reconnect attempts (jittered: sites come back spread out).
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)
    #: JetStream key-value bucket of the sites' status (``None``: no status sent).
    status_bucket: str | None = Field(default="COFFEE_STATUS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: The status is put every ``heartbeat_s``; centrally a site is offline after 3 missed.
    heartbeat_s: float = Field(default=15.0, ge=0.5, le=300)

    @field_validator("servers")
    @classmethod
    def _nats_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not re.match(r"^(nats|tls)://[^\s/@]+$", url):
                raise ValueError(f"{url!r} is not a nats:// or tls:// URL (host:port)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> NatsConfig:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        if self.creds_file and self.username:
            raise ValueError("set creds_file or username, not both")
        return self


class SinksConfig(_Model):
    """``[sinks]``: further delivery targets, each with its own outbox cursor."""

    nats: NatsConfig | None = None


class SerialSettings(_Model):
    """``[devices.serial]``: line settings, from the device's menu."""

    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    xonxoff: bool = False
    rtscts: bool = False
    exclusive: bool = True


class FieldPatternConfig(_Model):
    """One ``[[devices.ticket.fields]]`` entry."""

    field: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    regex: str
    kind: Literal["float", "text"] = "float"

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        _check_regex(value)
        if re.compile(value).groups < 1:
            raise ValueError("needs a capture group for the value")
        return value


class TicketOptionsConfig(_Model):
    """``[devices.ticket]``: how printed tickets are framed and read."""

    line_ending: Literal["auto", "cr", "lf", "crlf"] = "auto"
    idle_gap_s: float = Field(default=2.0, gt=0, le=60)
    start_regex: str | None = None
    end_regex: str | None = None
    max_lines: int = Field(default=60, ge=1, le=500)
    max_bytes: int = Field(default=4096, ge=64, le=65536)
    duplicate_window_s: float = Field(default=10.0, ge=0, le=3600)
    fields: tuple[FieldPatternConfig, ...] | None = None

    _regexes = field_validator("start_regex", "end_regex")(_check_regex)


class TesmaOptionsConfig(_Model):
    """``[devices.tesma]``: continuous-frame debounce."""

    debounce: int = Field(default=2, ge=1, le=10)


#: Text a person writes about a meter (make, model, serial number, certificate...): one
#: line of letters, digits, spaces and ``. , / ( ) # : + - _``, never markup or control
#: characters, since it is printed in lot reports and CSV files years later.
_METER_TEXT = re.compile(r"[^\W_][\w .,/()#:+-]{0,63}")


def _meter_text(value: str) -> str:
    if not _METER_TEXT.fullmatch(value) or value != value.strip():
        raise ValueError(
            f"{value[:40]!r} is not allowed here: 1-64 characters, starting with a letter or"
            " digit; letters, digits, spaces and . , / ( ) # : + - _ only"
        )
    return value


class CalibrationConfig(_Model):
    """``[devices.meter.calibration]``: the calibration certificate in force.

    Attributes:
        date: When the meter was calibrated (a TOML date, ``2026-03-10``).
        certificate: The certificate's number.
        offset_pct: The offset the certificate found against the reference method, in
            percentage points (recorded as evidence; readings are never altered).
        due: When the next calibration is due (default: one year after ``date``, the
            makers' advice).
    """

    date: datetime.date
    certificate: str
    offset_pct: float = Field(default=0.0, ge=-10, le=10, allow_inf_nan=False)
    due: datetime.date | None = None

    @field_validator("certificate")
    @classmethod
    def _text(cls, value: str) -> str:
        return _meter_text(value)

    @model_validator(mode="after")
    def _due_after_date(self) -> CalibrationConfig:
        if not datetime.date(2000, 1, 1) <= self.date <= datetime.date(2200, 1, 1):
            raise ValueError(f"date ({self.date}) must be between 2000-01-01 and 2200-01-01")
        if self.due is not None and self.due <= self.date:
            raise ValueError(f"due ({self.due}) must be after the calibration date ({self.date})")
        return self

    @property
    def due_date(self) -> datetime.date:
        """``due``, or one year after ``date``."""
        if self.due is not None:
            return self.due
        try:
            return self.date.replace(year=self.date.year + 1)
        except ValueError:  # 29 February
            return self.date + datetime.timedelta(days=365)


class MeterConfig(_Model):
    """``[devices.meter]``: the measuring instrument's identity and calibration.

    ``serial`` here is the instrument's serial number (``[devices.serial]`` is the
    line settings). ``inmetro_approval`` is the model's Inmetro approval number;
    ``method`` the measuring method (``ISO 6673-indexed``, or the maker's curve name).
    """

    make: str | None = None
    model: str | None = None
    serial: str | None = None
    inmetro_approval: str | None = None
    method: str | None = None
    calibration: CalibrationConfig | None = None

    @field_validator("make", "model", "serial", "inmetro_approval", "method")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _meter_text(value)


class _DeviceBase(_Model):
    id: Ident
    port: str = Field(min_length=1)
    station: Annotated[str, Field(pattern=r"^$|" + IDENT)] = ""
    product: str | None = Field(default=None, min_length=1, max_length=48)
    enabled: bool = True
    serial: SerialSettings = SerialSettings()
    #: The instrument's identity and calibration (``[devices.meter]``), if recorded.
    meter: MeterConfig | None = None
    #: The meter profile laid under this table (``drivers/profiles``); its keys lose to ours.
    profile: str | None = None


class StreamDeviceBase(_DeviceBase):
    """A device that only talks: the agent listens through the ``StreamDriver`` it makes."""

    #: Each driver's class narrows this to its own name, the registry's discriminator.
    driver: str

    def make_driver(self) -> StreamDriver:
        """A fresh driver for this device (one per port open)."""
        raise NotImplementedError


class TicketDevice(StreamDeviceBase):
    """A moisture meter printing tickets (``driver = "moisture.ticket"``)."""

    driver: Literal["moisture.ticket"]
    ticket: TicketOptionsConfig = TicketOptionsConfig()

    def driver_options(self) -> TicketOptions:
        """The ticket driver's options from ``[devices.ticket]``."""
        opts = self.ticket
        base = TicketOptions()
        patterns = (
            tuple(FieldPattern(field=f.field, regex=f.regex, kind=f.kind) for f in opts.fields)
            if opts.fields is not None
            else base.patterns
        )
        return TicketOptions(
            line_ending=opts.line_ending,
            idle_gap_s=opts.idle_gap_s,
            start_regex=opts.start_regex,
            end_regex=opts.end_regex,
            max_lines=opts.max_lines,
            max_bytes=opts.max_bytes,
            patterns=patterns,
            duplicate_window_s=opts.duplicate_window_s,
        )

    def make_driver(self) -> StreamDriver:
        """A ``TicketParser`` with this device's framing and field patterns."""
        return TicketParser(self.driver_options())


class TesmaDevice(StreamDeviceBase):
    """A Tesma-style continuous moisture meter (``driver = "moisture.tesma"``)."""

    driver: Literal["moisture.tesma"]
    tesma: TesmaOptionsConfig = TesmaOptionsConfig()

    def make_driver(self) -> StreamDriver:
        """A ``TesmaParser``; it debounces by repetition, so it needs no clock."""
        return ClocklessDriver(TesmaParser(debounce=self.tesma.debounce))


class MtSicsOptionsConfig(_Model):
    """``[devices.mtsics]``: how an MT-SICS balance is polled."""

    mode: Literal["poll", "stream"] = "poll"
    poll_s: float = Field(default=1.0, ge=0.1, le=60)
    publish_unstable: bool = False
    reply_timeout_s: float = Field(default=1.0, gt=0, le=30)
    stable_timeout_s: float = Field(default=10.0, gt=0, le=120)
    republish_s: float = Field(default=5.0, ge=0, le=3600)
    line_ending: Literal["crlf", "cr", "lf"] = "crlf"


class MtSicsDevice(_DeviceBase):
    """A Mettler Toledo balance speaking MT-SICS (``driver = "scale.mtsics"``)."""

    driver: Literal["scale.mtsics"]
    #: Mettler's factory setting is Xon/Xoff flow control (protocols §2.1).
    serial: SerialSettings = SerialSettings(xonxoff=True)
    mtsics: MtSicsOptionsConfig = MtSicsOptionsConfig()


class ScaleStreamOptionsConfig(_Model):
    """``[devices.toledo]`` / ``[devices.ascii]``: continuous weight streams."""

    republish_s: float = Field(default=5.0, ge=0, le=3600)
    weighment_stable_s: float = Field(default=2.0, gt=0, le=60)
    weighment_divisions: int = Field(default=10, ge=1, le=100000)


class ToledoOptionsConfig(ScaleStreamOptionsConfig):
    """``[devices.toledo]``: Toledo continuous output."""

    checksum: Literal["auto", "on", "off"] = "auto"


class ToledoDevice(StreamDeviceBase):
    """An indicator in Toledo continuous mode (``driver = "scale.toledo_continuous"``)."""

    driver: Literal["scale.toledo_continuous"]
    toledo: ToledoOptionsConfig = ToledoOptionsConfig()

    def make_driver(self) -> StreamDriver:
        """A ``ToledoParser`` with this device's checksum and weighment settings."""
        toledo = self.toledo
        return ToledoParser(
            checksum=toledo.checksum,
            republish_s=toledo.republish_s,
            weighment_stable_s=toledo.weighment_stable_s,
            weighment_divisions=toledo.weighment_divisions,
        )


class AsciiScaleDevice(StreamDeviceBase):
    """An A&D / generic ``ST,GS`` indicator (``driver = "scale.ascii"``)."""

    driver: Literal["scale.ascii"]
    ascii: ScaleStreamOptionsConfig = ScaleStreamOptionsConfig()

    def make_driver(self) -> StreamDriver:
        """An ``AsciiScaleParser`` with this device's weighment settings."""
        stream = self.ascii
        return AsciiScaleParser(
            republish_s=stream.republish_s,
            weighment_stable_s=stream.weighment_stable_s,
            weighment_divisions=stream.weighment_divisions,
        )


#: The driver registry: one class per driver, each named by its ``driver`` literal.
#: A new stream driver is one ``StreamDeviceBase`` subclass above (its options and
#: ``make_driver``) and its name in this union; nothing else in the agent changes.
DeviceConfig = Annotated[
    TicketDevice | TesmaDevice | MtSicsDevice | ToledoDevice | AsciiScaleDevice,
    Field(discriminator="driver"),
]

#: Driver names accepted in ``[[devices]]``, in the registry's order.
DRIVERS: tuple[str, ...] = tuple(
    str(get_args(model.model_fields["driver"].annotation)[0])
    for model in get_args(get_args(DeviceConfig)[0])
)


class BusConfig(_Model):
    """``[[buses]]``: one RS-485 adapter shared by Modbus RTU units."""

    id: Ident
    port: str = Field(min_length=1)
    serial: SerialSettings = SerialSettings(stopbits=2)
    min_gap_s: float = Field(default=0.02, ge=0, le=5)
    timeout_s: float = Field(default=0.5, gt=0, le=10)
    retries: int = Field(default=1, ge=0, le=5)


class ServiceTaskConfig(_Model):
    """``[[hullers.tasks]]``: a service done every ``interval_h`` running hours."""

    id: Ident
    name: str = Field(default="", max_length=80)
    interval_h: float = Field(gt=0, le=100000)
    warn_before_h: float = Field(default=10.0, ge=0)


#: Where a huller's motor-running signal comes from.
MotorInput = Literal[
    "none",
    "counter.INA",
    "counter.INB",
    "counter.INHIBIT",
    "timer.INA",
    "timer.INB",
    "timer.INHIBIT",
]

#: What one count of the hour meter is worth, in hours.
HOUR_METER_UNITS: dict[str, float] = {"s": 1 / 3600, "min": 1 / 60, "0.1h": 0.1, "h": 1.0}


class HullerConfig(_Model):
    """``[[hullers]]``: a bag counter, a run-hour timer and service tasks."""

    id: Ident
    name: str = Field(default="", max_length=80)
    bus: Ident
    bag_counter: int = Field(ge=1, le=247)
    hour_meter: int | None = Field(default=None, ge=1, le=247)
    hour_meter_unit: Literal["s", "min", "0.1h", "h"] = "s"
    motor_input: MotorInput = "none"
    motor_input_inverted: bool = False
    bags_per_pulse: float = Field(default=1.0, gt=0, le=1000)
    poll_interval_s: float = Field(default=2.0, ge=0.1, le=600)
    station: Annotated[str, Field(pattern=r"^$|" + IDENT)] = ""
    tasks: tuple[ServiceTaskConfig, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> HullerConfig:
        if self.hour_meter is not None and self.hour_meter == self.bag_counter:
            raise ValueError("hour_meter and bag_counter must be different Modbus addresses")
        if self.motor_input.startswith("timer.") and self.hour_meter is None:
            raise ValueError(f"motor_input = {self.motor_input!r} needs hour_meter")
        ids = [t.id for t in self.tasks]
        if len(ids) != len(set(ids)):
            raise ValueError("task ids must be unique within a huller")
        return self


class ClimateRegistersConfig(_Model):
    """``[climate.registers]``: where a T/RH sensor keeps its values (default: XY-MD02).

    Input registers (FC04) only: the bus master sends FC04, FC02 and FC05.
    """

    function: Literal[4] = 4
    temperature: int = Field(default=0x0001, ge=0, le=0xFFFF)
    humidity: int = Field(default=0x0002, ge=0, le=0xFFFF)
    temperature_divisor: Literal[1, 10, 100] = 10
    humidity_divisor: Literal[1, 10, 100] = 10
    temperature_signed: bool = True

    @model_validator(mode="after")
    def _fits(self) -> ClimateRegistersConfig:
        self.register_map()  # the driver's own checks: distinct, within one short read
        return self

    def register_map(self) -> RegisterMap:
        """The driver's register map."""
        try:
            return RegisterMap(
                function=FunctionCode(self.function),
                temperature=self.temperature,
                humidity=self.humidity,
                temperature_divisor=self.temperature_divisor,
                humidity_divisor=self.humidity_divisor,
                temperature_signed=self.temperature_signed,
            )
        except DriverUsageError as exc:
            raise ValueError(str(exc)) from None


class ClimateSensorConfig(_Model):
    """``[[climate]]``: a temperature/RH sensor in a storage area, on a Modbus RTU bus."""

    id: Ident
    bus: Ident
    unit: int = Field(ge=1, le=247)
    area: Ident
    poll_interval_s: float = Field(default=60.0, ge=0.1, le=3600)
    registers: ClimateRegistersConfig = ClimateRegistersConfig()


# -- alert rules ---------------------------------------------------------------------------
# The ``*Params`` models below are the one declaration of what each alert rule takes from
# ``[alerts.*]``: its keys, their defaults and their limits. The rule classes in
# ``agent.alerts.kinds`` extend them (adding what a site cannot set: the rule's name, its
# severity, fixed tuning), so a value is checked once, by the same declaration, whether
# it comes from the file (``ConfigError`` naming ``alerts.wet_lot.k``) or from code
# (``RuleError`` naming ``k``). The limits are those both earlier layers (config models
# and the rules' own checks) enforced together: durations and thresholds are finite.

#: Seconds a rule's condition must hold before its alert fires.
PendingS = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Seconds between reminders of a firing, unacknowledged alert; None: notify once.
RepeatS = Annotated[float | None, Field(gt=0, allow_inf_nan=False)]
#: A finite duration, threshold or amount above zero.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class RuleParams(_Model):
    """Base of the alert rules' settings (frozen; unknown keys are refused)."""


class WetLotParams(RuleParams):
    """The ``wet_lot`` rule's settings (``agent.alerts.kinds.WetLotRule``).

    Attributes:
        default_threshold_pct: Threshold for products not in ``thresholds_pct``.
        thresholds_pct: Threshold per product (the ``product`` tag), case-insensitive.
        hysteresis_pct: The clear test uses the threshold minus this.
        n: Size of the window of recent readings.
        k: Readings at or above the threshold, among the last ``n``, that fire.
        pending_s: How long the condition must hold before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    default_threshold_pct: float = Field(default=12.5, gt=0, le=60)
    thresholds_pct: dict[str, Positive] = Field(default_factory=dict)
    hysteresis_pct: float = Field(default=0.5, ge=0, le=10)
    n: int = Field(default=3, ge=1, le=100)
    k: int = Field(default=2, ge=1, le=100)  # after n: its check reads n
    pending_s: PendingS = 0.0
    repeat_s: RepeatS = 1800.0

    @field_validator("k")
    @classmethod
    def _k_of_n(cls, k: int, info: ValidationInfo) -> int:
        n = info.data.get("n")  # absent when n itself was refused
        if isinstance(n, int) and k > n:
            raise ValueError(f"k ({k}) cannot be larger than n ({n})")
        return k


class WetLotConfig(WetLotParams):
    """``[alerts.wet_lot]``: a lot too wet to store."""

    enabled: bool = True


class DeviceSilentParams(RuleParams):
    """The ``device_silent`` rule's settings (``agent.alerts.kinds.DeviceSilentRule``).

    Attributes:
        silent_s_by_driver: Limits per driver, merged over the built-in ones;
            ``None`` (from code: TOML has no null) switches a driver off.
        silent_s_by_device: Limits per device id, winning over the driver's;
            ``None`` switches a device off.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    silent_s_by_driver: dict[str, Positive | None] = Field(default_factory=dict)
    silent_s_by_device: dict[str, Positive | None] = Field(default_factory=dict)
    repeat_s: RepeatS = 3600.0


class DeviceSilentConfig(DeviceSilentParams):
    """``[alerts.device_silent]``: no valid frame for too long."""

    enabled: bool = True


class HullerFaultParams(RuleParams):
    """The ``huller_fault`` rule's settings (``agent.alerts.kinds.HullerFaultRule``).

    Attributes:
        offline_s: ``comms`` fires after the huller has been offline this long.
        jam_s: ``jam`` fires after the motor ran this long with no bag counted.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    offline_s: Positive = 30.0
    jam_s: Positive = 600.0
    repeat_s: RepeatS = 1800.0


class HullerFaultConfig(HullerFaultParams):
    """``[alerts.huller_fault]``: units offline or erroring, jams, wiring faults."""

    enabled: bool = True


class ServiceAlertConfig(_Model):
    """``[alerts.service]``: service tasks due or overdue.

    Attributes:
        enabled: Whether the ``service_due`` and ``service_overdue`` rules run.
        overdue_repeat_s: ``service_overdue``'s ``repeat_s`` (``service_due`` notifies once).
    """

    enabled: bool = True
    overdue_repeat_s: RepeatS = 86400.0


class SinkBacklogParams(RuleParams):
    """The ``sink_backlog`` rule's settings (``agent.alerts.kinds.SinkBacklogRule``).

    Attributes:
        undelivered_s: Fires when the sink delivered nothing for this long.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    undelivered_s: Positive = 600.0
    repeat_s: RepeatS = 3600.0


class SinkBacklogConfig(SinkBacklogParams):
    """``[alerts.sink_backlog]``: a sink that has not delivered for too long."""

    enabled: bool = True


class HumidStorageParams(RuleParams):
    """The ``humid_storage`` rule's settings (``agent.alerts.kinds.HumidStorageRule``).

    Attributes:
        threshold_pct: Relative humidity (%) at or above which a storage sensor's air
            counts as humid (70 % brings green coffee to about 12 % moisture).
        hysteresis_pct: Once pending or firing, it clears below the threshold minus this.
        pending_s: How long the air must stay humid before the alert fires.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    threshold_pct: float = Field(default=70.0, gt=0, le=100)
    hysteresis_pct: float = Field(default=2.0, ge=0, le=20)
    pending_s: PendingS = 6 * 3600.0
    repeat_s: RepeatS = 86400.0


class HumidStorageConfig(HumidStorageParams):
    """``[alerts.humid_storage]``: a storage area whose air stays humid for hours."""

    enabled: bool = True


class CalibrationDueParams(RuleParams):
    """The ``calibration_due`` rule's settings (``agent.alerts.kinds.CalibrationDueRule``).

    Attributes:
        warn_days: Fires when a meter's calibration is due within this many days (or past).
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    warn_days: int = Field(default=30, ge=0, le=366)
    repeat_s: RepeatS = 7 * 86400.0


class CalibrationDueConfig(CalibrationDueParams):
    """``[alerts.calibration_due]``: a meter whose calibration certificate runs out."""

    enabled: bool = True


class MeterDisagreementParams(RuleParams):
    """The ``meter_disagreement`` rule's settings (also the lot reports' cross-check).

    Attributes:
        tolerance_pp: Two meters' readings of one lot further apart than this
            (percentage points) disagree (0.8: farm meters are about ±0.5 % at best).
        window_s: Readings of one lot by two meters count as the same measurement when
            at most this far apart in time.
        repeat_s: Notify again this often while firing and unacknowledged (None: once).
    """

    tolerance_pp: float = Field(default=0.8, gt=0, le=10)
    window_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    repeat_s: RepeatS = None


class MeterDisagreementConfig(MeterDisagreementParams):
    """``[alerts.meter_disagreement]``: two meters reading one lot differently."""

    enabled: bool = True


#: Header names that carry credentials: their values come only from the environment or a file.
_SECRET_HEADER = re.compile(
    r"(^(proxy-)?authorization$|^cookie$|token|secret|password|passwd|api-?key|signature|auth)",
    re.IGNORECASE,
)


class WebhookConfig(_Model):
    """``[[alerts.webhooks]]``: where alert notifications are POSTed.

    ``headers`` holds plain values (``X-Site``); a header that carries a credential
    (``Authorization``, ``Cookie``, a token, key, secret or signature) comes from
    ``headers_env`` (an environment variable) or ``headers_file`` (a file), never
    from this file.
    """

    name: Ident
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    headers_file: dict[str, Path] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if _SECRET_HEADER.search(header):
                raise ValueError(
                    f"{header!r} carries a credential: give it in headers_env (an environment"
                    " variable) or headers_file (a file), not in the site file"
                )
        return value


class AlertsConfig(_Model):
    """``[alerts]``: rules evaluated on the edge box, shown locally, sent onward."""

    enabled: bool = True
    lang: Literal["pt-BR", "en"] = "pt-BR"
    wet_lot: WetLotConfig = WetLotConfig()
    device_silent: DeviceSilentConfig = DeviceSilentConfig()
    huller_fault: HullerFaultConfig = HullerFaultConfig()
    service: ServiceAlertConfig = ServiceAlertConfig()
    sink_backlog: SinkBacklogConfig = SinkBacklogConfig()
    humid_storage: HumidStorageConfig = HumidStorageConfig()
    calibration_due: CalibrationDueConfig = CalibrationDueConfig()
    meter_disagreement: MeterDisagreementConfig = MeterDisagreementConfig()
    webhooks: tuple[WebhookConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_webhooks(self) -> AlertsConfig:
        names = [w.name for w in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique")
        reserved = {"mqtt", "influx"} & set(names)
        if reserved:
            raise ValueError(f"webhook name {sorted(reserved)[0]!r} is reserved for a sink")
        return self


class HistoryConfig(_Model):
    """``[history]``: the local history the built-in dashboard reads offline."""

    enabled: bool = True
    path: Path | None = None
    max_mb: float = Field(default=2048.0, gt=0)
    raw_retention_days: float = Field(default=30.0, gt=0)
    rollup_retention_days: float = Field(default=730.0, gt=0)
    #: Seconds between writes of what was buffered (a crash loses at most this much history).
    flush_interval_s: float = Field(default=1.0, gt=0, le=300)
    #: SQLite page size of a history store created from now on.
    page_size: Literal[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] | None = None


class LotsConfig(_Model):
    """``[lots]``: lot records, their reports and drying estimates."""

    #: A lot not seen for this long is deleted with its whole record (``agent.lots.records``);
    #: at least 5 years, the EU Deforestation Regulation's record-keeping period.
    retention_years: float = Field(default=5.0, ge=5, le=50)
    #: Longest the lot record sink gathers records into one (fsynced) transaction.
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Target moisture a drying lot is estimated to reach (% wet basis).
    target_moisture_pct: float = Field(default=11.5, gt=0, lt=100)
    #: Target moisture per product type (``cereja = 12.0``); others use the default.
    target_moisture_by_product: dict[str, float] = Field(default_factory=dict)
    #: Days a lot rests after leaving a patio, or a mechanical dryer, before hulling.
    rest_days_patio: float = Field(default=8.0, ge=0, le=365)
    rest_days_mechanical: float = Field(default=10.0, ge=0, le=365)
    #: The hulling window (% wet basis): a rested lot is ready when its latest
    #: ``ready_readings`` readings since drying are all inside it.
    hulling_min_pct: float = Field(default=10.8, gt=0, lt=100)
    hulling_max_pct: float = Field(default=11.2, gt=0, lt=100)
    ready_readings: int = Field(default=3, ge=1, le=100)
    #: How often the agent looks for lots that became ready to hull (seconds).
    ready_check_s: float = Field(default=60.0, ge=0.1, le=3600)
    #: Severity of the "ready to hull" notice (routes take it by rule and severity).
    ready_severity: Literal["info", "warning", "critical"] = "info"

    @model_validator(mode="after")
    def _window(self) -> LotsConfig:
        if not self.hulling_min_pct < self.hulling_max_pct:
            raise ValueError("hulling_min_pct must be below hulling_max_pct")
        return self

    @field_validator("target_moisture_by_product")
    @classmethod
    def _targets(cls, value: dict[str, float]) -> dict[str, float]:
        for product, pct in value.items():
            if not 0 < pct < 100 or not math.isfinite(pct):
                raise ValueError(f"target moisture of {product!r} must be between 0 and 100")
        return {product.strip().lower(): pct for product, pct in value.items()}


class WebUserConfig(_Model):
    """``[[api.users]]``: someone who may log in to the dashboard and write.

    ``password_hash`` is what ``coffee-telemetry hash-password`` prints (Argon2id; older
    scrypt hashes are accepted and replaced at the user's next login, see
    ``agent.web.auth``). A hash the verifier would refuse to check (too costly for the
    box, or not a hash at all) is refused here, by ``agent.passwords.hash_problem``.
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    password_hash: Annotated[str, Field(max_length=512)]

    @field_validator("password_hash")
    @classmethod
    def _checkable(cls, value: str) -> str:
        problem = hash_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class ApiTokenConfig(_Model):
    """``[[api.tokens]]``: a named token for programs' API writes (recorded as ``token:<name>``)."""

    name: Ident
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApiTokenConfig:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("set token_env or token_file (one of them)")
        return self


def _host_name(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    if not re.match(
        r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*)$",
        host,
    ):
        raise ValueError(f"{value!r} is not a host name")
    return host


#: Longest a login may last (``api.session_hours``): 30 days.
MAX_SESSION_HOURS = 24 * 30


class ApiConfig(_Model):
    """``[api]``: the agent's web server (dashboard pages, JSON API, live events)."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(default=8780, ge=1, le=65535)
    #: The token named ``api`` (``token:api``); more in ``[[api.tokens]]``.
    token_env: str | None = None
    token_file: Path | None = None
    tokens: tuple[ApiTokenConfig, ...] = ()
    #: ``open``: pages and reads need no login (writes always do); ``login``: everything does.
    read_access: Literal["open", "login"] = "open"
    users: tuple[WebUserConfig, ...] = ()
    session_hours: float = Field(default=12.0, gt=0, le=MAX_SESSION_HOURS)
    #: Set when a TLS reverse proxy serves the pages: the session cookie gets ``Secure``
    #: (implied by an ``https://`` ``public_origin``).
    secure_cookies: bool = False
    #: The origin browsers use when a reverse proxy serves the pages
    #: (``https://armazem.example.coop``): the Origin check and the Host allowlist follow it.
    public_origin: str | None = None
    #: Proxies (addresses or networks) whose ``X-Forwarded-For``/``-Proto`` are believed.
    trusted_proxies: tuple[str, ...] = ()
    #: More host names the pages may be reached by (besides IP addresses, ``localhost``,
    #: this box's host name and ``public_origin``'s).
    allowed_hosts: tuple[str, ...] = ()
    lang: Literal["pt-BR", "en"] = "pt-BR"
    #: The pages' files (default: ``dashboards/web`` beside the ``agent`` package).
    assets_dir: Path | None = None
    # Connection limits (``agent.web.connlimit``). The caps are lowered at start if the
    # open-file limit cannot hold them; a per-address cap above the total is the total.
    #: Open HTTP connections at once; more are closed as soon as they are accepted.
    max_connections: int = Field(default=256, ge=1, le=65536)
    #: Open HTTP connections at once from one client address.
    max_connections_per_address: int = Field(default=32, ge=1, le=65536)
    #: A request line and headers must arrive whole within this, or the connection closes.
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: A request body must arrive whole within this of its headers.
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: An idle keep-alive connection is closed after this.
    keepalive_s: float = Field(default=75.0, gt=0, le=3600)
    #: Live-update streams (``GET /api/events``) at once; more answer 503.
    max_streams: int = Field(default=64, ge=1, le=4096)
    #: Live-update streams at once from one client address.
    max_streams_per_address: int = Field(default=8, ge=1, le=4096)
    #: ``/metrics``, ``/healthz`` and ``/readyz`` without login from any address (default:
    #: from loopback only; other clients need an API token or a login).
    metrics_public: bool = False

    @field_validator("users")
    @classmethod
    def _unique_users(cls, value: tuple[WebUserConfig, ...]) -> tuple[WebUserConfig, ...]:
        names = [u.name for u in value]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"user names must be unique; repeated: {', '.join(dup)}")
        return value

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = re.match(r"^(?i:(https?))://([^/:?#@\s]+|\[[0-9A-Fa-f:.]+\])(:(\d{1,5}))?/?$", value)
        if m is None or (m[4] is not None and not 0 < int(m[4]) < 65536):
            raise ValueError(
                "must be a scheme, host and optional port, nothing else"
                " (e.g. 'https://armazem.example.coop')"
            )
        scheme, host = m[1].lower(), _host_name(m[2])
        default = {"http": 80, "https": 443}[scheme]
        port = f":{m[4]}" if m[4] is not None and int(m[4]) != default else ""
        return f"{scheme}://{host}{port}"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. '127.0.0.1', '10.0.0.0/8')"
                ) from None
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_host_name(v) for v in value)

    @model_validator(mode="after")
    def _unique_tokens(self) -> ApiConfig:
        names = [t.name for t in self.tokens] + (
            ["api"] if self.token_env or self.token_file else []
        )
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(
                f"token names must be unique ('api' is token_env/token_file's);"
                f" repeated: {', '.join(dup)}"
            )
        if self.token_env and self.token_file:
            raise ValueError("set token_env or token_file, not both")
        return self

    @property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` as networks."""
        return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)


class Config(_Model):
    """The whole site file."""

    site: SiteConfig
    agent: AgentSection = AgentSection()
    outbox: OutboxConfig = OutboxConfig()
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    sinks: SinksConfig = SinksConfig()
    devices: tuple[DeviceConfig, ...] = ()
    buses: tuple[BusConfig, ...] = ()
    hullers: tuple[HullerConfig, ...] = ()
    climate: tuple[ClimateSensorConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    notify: NotifyConfig = NotifyConfig()
    api: ApiConfig = ApiConfig()
    history: HistoryConfig = HistoryConfig()
    lots: LotsConfig = LotsConfig()

    # Resolved secrets (never in the file).
    mqtt_password: SecretStr | None = None
    influx_password: SecretStr | None = None
    influx_token: SecretStr | None = None
    nats_password: SecretStr | None = None
    api_token: SecretStr | None = None
    #: Every API token by name (``api`` is ``[api] token_env``/``token_file``'s).
    api_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    #: Webhook headers whose values came from the environment or a file, by webhook name.
    webhook_secret_headers: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)
    #: The secret files read, by the key that names them (for ``check-config``'s warnings).
    secret_files: dict[str, Path] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _profiles(cls, doc: object) -> object:
        """Lay each device's ``profile`` under its table, before the driver is known."""
        devices = doc.get("devices") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not isinstance(devices, list | tuple):
            return doc
        out = []
        for i, dev in enumerate(devices):
            try:
                out.append(profiles.apply_profile(dev) if isinstance(dev, dict) else dev)
            except profiles.ProfileProblem as exc:
                raise ValueError(f"devices[{i}].profile: {exc}") from None
        return {**doc, "devices": out}

    @model_validator(mode="before")
    @classmethod
    def _storage_profile(cls, doc: object) -> object:
        """Fill in the ``[agent] storage_profile``'s settings the file leaves unset."""
        return apply_storage_profile(doc) if isinstance(doc, dict) else doc

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen_ids: set[str] = set()
        seen_ports: set[str] = set()
        for i, dev in enumerate(self.devices):
            if dev.id in RESERVED_IDS:
                raise ValueError(
                    f"devices[{i}].id: {dev.id!r} is reserved for the agent's own topics"
                )
            if dev.id in seen_ids:
                raise ValueError(f"devices[{i}].id: duplicate device id {dev.id!r}")
            if dev.enabled and dev.port in seen_ports:
                raise ValueError(f"devices[{i}].port: port {dev.port!r} is used twice")
            seen_ids.add(dev.id)
            if dev.enabled:
                seen_ports.add(dev.port)
        bus_ids: set[str] = set()
        for i, bus in enumerate(self.buses):
            if bus.id in bus_ids:
                raise ValueError(f"buses[{i}].id: duplicate bus id {bus.id!r}")
            if bus.port in seen_ports:
                raise ValueError(f"buses[{i}].port: port {bus.port!r} is used twice")
            bus_ids.add(bus.id)
            seen_ports.add(bus.port)
        addresses: set[tuple[str, int]] = set()
        for i, huller in enumerate(self.hullers):
            if huller.id in seen_ids or huller.id in RESERVED_IDS:
                raise ValueError(f"hullers[{i}].id: {huller.id!r} is already used")
            seen_ids.add(huller.id)
            if huller.bus not in bus_ids:
                raise ValueError(f"hullers[{i}].bus: no [[buses]] entry with id {huller.bus!r}")
            for key, addr in (
                ("bag_counter", huller.bag_counter),
                ("hour_meter", huller.hour_meter),
            ):
                if addr is None:
                    continue
                if (huller.bus, addr) in addresses:
                    raise ValueError(
                        f"hullers[{i}].{key}: address {addr} is already used on bus {huller.bus!r}"
                    )
                addresses.add((huller.bus, addr))
        for i, sensor in enumerate(self.climate):
            if sensor.id in seen_ids or sensor.id in RESERVED_IDS:
                raise ValueError(f"climate[{i}].id: {sensor.id!r} is already used")
            seen_ids.add(sensor.id)
            if sensor.bus not in bus_ids:
                raise ValueError(f"climate[{i}].bus: no [[buses]] entry with id {sensor.bus!r}")
            if (sensor.bus, sensor.unit) in addresses:
                raise ValueError(
                    f"climate[{i}].unit: address {sensor.unit} is already used "
                    f"on bus {sensor.bus!r}"
                )
            addresses.add((sensor.bus, sensor.unit))
        return self

    @property
    def history_path(self) -> Path:
        """Where the local history lives."""
        return self.history.path or self.agent.data_dir / "history.sqlite3"

    @property
    def lot_records_path(self) -> Path:
        """Where lot records live: ``data_dir/lots-records.sqlite3``."""
        return self.agent.data_dir / "lots-records.sqlite3"

    @property
    def maintenance_path(self) -> Path:
        """Where huller totals and service records live."""
        return self.agent.data_dir / "maintenance.sqlite3"

    @property
    def outbox_path(self) -> Path:
        """Where the outbox lives (``outbox.path`` or ``data_dir/outbox.sqlite3``)."""
        return self.outbox.path or self.agent.data_dir / "outbox.sqlite3"


_KEYED_MESSAGE = re.compile(r"^([a-z_]+\[\d+\](?:\.[a-z_]+)*): ")


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in DRIVERS or part.startswith("function-"):
            continue  # the discriminator pydantic inserts; not a key the user wrote
        else:
            out += ("." if out else "") + part
    return out


def parse_config(doc: dict[str, object], *, source: str = "") -> Config:
    """Validate a parsed TOML document and resolve its secrets.

    Raises:
        ConfigError: Every problem found, each naming its key.
    """
    try:
        cfg = Config.model_validate(doc)
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            key = _loc(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "union_tag_invalid":
                given = (err.get("ctx") or {}).get("tag")
                msg = f"unknown driver {given!r}; expected one of " + ", ".join(
                    repr(d) for d in DRIVERS
                )
                key = f"{key or 'devices'}.driver"
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check spelling)"
            if key.endswith(".password_hash") and err["type"] != "value_error":
                # Never echo it: a plain password put here by mistake must not reach a log.
                msg = (
                    "not a password hash: run `coffee-telemetry hash-password` and paste"
                    " the line it prints"
                )
            elif err["type"] == "string_pattern_mismatch":
                msg = (
                    f"{err['input']!r} is not allowed here: use lowercase letters, digits,"
                    " '-' and '_' (it becomes part of MQTT topics and tags)"
                )
            keyed = _KEYED_MESSAGE.match(msg)
            if keyed:  # a cross-field check names its own key
                key, msg = keyed.group(1), msg[keyed.end() :]
            found.append((key, msg))
        raise ConfigError(found, source=source) from None
    secrets = _Secrets()
    mqtt_password = secrets.read("mqtt.password", cfg.mqtt.password_env, cfg.mqtt.password_file)
    influx_password = secrets.read(
        "influx.password", cfg.influx.password_env, cfg.influx.password_file
    )
    influx_token = secrets.read("influx.token", cfg.influx.token_env, cfg.influx.token_file)
    api_token = secrets.token("api.token", cfg.api.token_env, cfg.api.token_file)
    api_tokens = {} if api_token is None else {"api": api_token}
    for i, named in enumerate(cfg.api.tokens):
        value = secrets.token(f"api.tokens[{i}].token", named.token_env, named.token_file)
        if value is not None:
            api_tokens[named.name] = value
    webhook_secret_headers: dict[str, dict[str, SecretStr]] = {}
    for i, hook in enumerate(cfg.alerts.webhooks):
        resolved: dict[str, SecretStr] = {}
        for header, env in hook.headers_env.items():
            got = os.environ.get(env)
            if got is None:
                secrets.problems.append(
                    (
                        f"alerts.webhooks[{i}].headers_env.{header}",
                        f"environment variable {env} is not set",
                    )
                )
            else:
                resolved[header] = SecretStr(got)
        for header, file in hook.headers_file.items():
            secret = secrets.read_file(f"alerts.webhooks[{i}].headers_file.{header}", file)
            if secret is not None:
                resolved[header] = secret
        webhook_secret_headers[hook.name] = resolved
    mqtt_tls = secrets.tls("mqtt.tls", cfg.mqtt.tls)
    influx_tls = secrets.tls("influx.tls", cfg.influx.tls)
    nats = cfg.sinks.nats
    nats_password = None
    if nats is not None:
        nats_password = secrets.read("sinks.nats.password", nats.password_env, nats.password_file)
        creds = None if nats.creds_file is None else secrets.path("sinks.nats", nats.creds_file)
        if creds is not None:
            secrets.files["sinks.nats.creds_file"] = creds
        nats = nats.model_copy(
            update={"tls": secrets.tls("sinks.nats.tls", nats.tls), "creds_file": creds}
        )
    if secrets.problems:
        raise ConfigError(secrets.problems, source=source)
    return cfg.model_copy(
        update={
            "mqtt": cfg.mqtt.model_copy(update={"tls": mqtt_tls}),
            "influx": cfg.influx.model_copy(update={"tls": influx_tls}),
            "mqtt_password": mqtt_password,
            "influx_password": influx_password,
            "influx_token": influx_token,
            "sinks": cfg.sinks.model_copy(update={"nats": nats}),
            "nats_password": nats_password,
            "webhook_secret_headers": webhook_secret_headers,
            "api_token": api_token,
            "api_tokens": api_tokens,
            "secret_files": secrets.files,
        }
    )


def permission_warnings(path: Path, cfg: Config) -> list[str]:
    """What others may do to the site file and the secret files it names.

    The site file says who may log in and where the secrets are: nobody but its owner
    should be able to change it. A secret file should be readable by its owner only
    (systemd's ``LoadCredential=`` hands the agent a private copy of a root-only file).
    """
    found: list[str] = []
    for what, file, bits, verb in [
        ("the site file", path, stat.S_IWGRP | stat.S_IWOTH, "written"),
        *(
            (key, f, stat.S_IRWXO | stat.S_IRWXG, "read")
            for key, f in sorted(cfg.secret_files.items())
        ),
    ]:
        try:
            mode = file.stat().st_mode
        except OSError:
            continue
        if mode & bits:
            who = "anyone" if mode & bits & stat.S_IRWXO else "its group"
            fix = "chmod go-w" if verb == "written" else "chmod 600 (or use LoadCredential=)"
            found.append(
                f"{what} ({file}) is mode {stat.S_IMODE(mode):04o}: {who} may have it {verb};"
                f" {fix} {file}"
            )
    return found


def load_config(path: Path) -> Config:
    """Read and validate a site TOML file.

    Raises:
        ConfigError: The file is missing, not TOML, or invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read file: {exc.strerror}")], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text: {exc}")], source=str(path)) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from exc
    return parse_config(doc, source=str(path))
