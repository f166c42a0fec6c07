"""``coffee-telemetry init DIR``: a new site's files, ready to edit.

    coffee-telemetry init /etc/coffee-telemetry --site ourofino [--name N] [--force]

Theory of operation: the example configs, the systemd unit, the udev rules, the
Mosquitto files and the Grafana provisioning ship inside the package (the
``examples``, ``deploy``, ``broker_config`` and ``dashboards/grafana`` folders, as
package data), so an installed wheel has them without a checkout. ``init`` is the
one writer of a site's copies: it renders ``site.toml`` for this site (its id,
name, data directory) from ``examples/new-site.toml``, points the unit at this
``site.toml`` and at the ``coffee-telemetry`` that runs ``init``, and copies the
rest as it is. Everything is rendered and checked first (the ``site.toml`` must
pass the same validation as ``check-config``); then, unless ``--force``, nothing
is written if any target already exists, so a half-edited site is never
overwritten by halves.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from coffee_telemetry.agent.cli._common import EXIT_OK, EXIT_USAGE, Subcommands
from coffee_telemetry.agent.config import IDENT, parse_config
from coffee_telemetry.agent.errors import ConfigError

__all__ = ["SiteFile", "add_parser", "cmd_init", "render_site", "render_site_toml"]

#: Where the unit of ``deploy/`` expects things, replaced by this site's.
UNIT_EXECUTABLE = "/opt/coffee-telemetry/venv/bin/coffee-telemetry"
UNIT_CONFIG = "/etc/coffee-telemetry/site.toml"
UNIT_DATA_DIR = "/var/lib/coffee-telemetry"


@dataclass(frozen=True, slots=True)
class SiteFile:
    """One file ``init`` writes: its path under DIR, its bytes and its mode."""

    path: str
    content: bytes
    mode: int = 0o644


def _package() -> Traversable:
    return files("coffee_telemetry")


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        "\\" + ch if ch in '"\\' else f"\\u{ord(ch):04x}" if ch < " " or ch == "\x7f" else ch
        for ch in value
    )
    return f'"{escaped}"'


def render_site_toml(*, site: str, name: str, data_dir: str, config: str) -> str:
    """The commented ``site.toml`` for a new site.

    Raises:
        ConfigError: ``site`` is not an identifier, or the result does not validate.
    """
    if not re.fullmatch(IDENT, site):
        raise ConfigError(
            [
                (
                    "--site",
                    f"{site!r}: use lowercase letters, digits, - and _ (at most 48),"
                    " starting with a letter or digit",
                )
            ]
        )
    if any(ch in config for ch in "\r\n"):
        raise ConfigError([("DIR", "the path has a line break")])
    template = (_package() / "examples" / "new-site.toml").read_text(encoding="utf-8")
    text = (
        template.replace("@SITE_ID_TOML@", _toml_string(site))
        .replace("@SITE_NAME_TOML@", _toml_string(name))
        .replace("@DATA_DIR_TOML@", _toml_string(data_dir))
        .replace("@SITE_ID@", site)
        .replace("@CONFIG@", config)
    )
    # What check-config will say about it, said now.
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"cannot write a valid site.toml: {exc}")]) from None
    parse_config(doc, source="site.toml")
    return text


def _unit(*, config: str, data_dir: str, executable: str) -> bytes:
    text = (_package() / "deploy" / "coffee-telemetry.service").read_text(encoding="utf-8")
    text = text.replace(UNIT_EXECUTABLE, executable).replace(UNIT_CONFIG, config)
    if data_dir != UNIT_DATA_DIR:
        text = text.replace(f"ReadWritePaths={UNIT_DATA_DIR}", f"ReadWritePaths={data_dir}")
    return text.encode()


def _copies(source: Traversable, target: str, suffix: str) -> list[SiteFile]:
    return [
        SiteFile(f"{target}/{item.name}", item.read_bytes())
        for item in sorted(source.iterdir(), key=lambda t: t.name)
        if item.is_file() and item.name.endswith(suffix)
    ]


def render_site(
    directory: Path, *, site: str, name: str, data_dir: str, executable: str
) -> list[SiteFile]:
    """Every file of a new site in ``directory``, rendered (nothing written).

    Raises:
        ConfigError: The site id, name or paths do not make a valid ``site.toml``.
    """
    config = str(directory / "site.toml")
    pkg = _package()
    deploy, broker = pkg / "deploy", pkg / "broker_config"
    grafana = pkg / "dashboards" / "grafana"
    site_toml = render_site_toml(site=site, name=name, data_dir=data_dir, config=config)
    out = [
        SiteFile("site.toml", site_toml.encode(), 0o640),
        SiteFile(
            "systemd/coffee-telemetry.service",
            _unit(config=config, data_dir=data_dir, executable=executable),
        ),
        SiteFile("systemd/secrets.env.example", (deploy / "secrets.env.example").read_bytes()),
        SiteFile(
            "udev/99-coffee-telemetry.rules", (deploy / "99-coffee-telemetry.rules").read_bytes()
        ),
        SiteFile("mosquitto/coffee-telemetry.conf", (broker / "mosquitto.conf").read_bytes()),
        SiteFile(
            "mosquitto/coffee-telemetry-listeners.conf", (broker / "listeners.conf").read_bytes()
        ),
        SiteFile("mosquitto/coffee-telemetry.acl", (broker / "coffee-telemetry.acl").read_bytes()),
        SiteFile("mosquitto/README.md", (broker / "README.md").read_bytes()),
    ]
    for kind in ("datasources", "dashboards"):
        out += _copies(grafana / "provisioning" / kind, f"grafana/provisioning/{kind}", ".yaml")
    out += _copies(grafana / "json", "grafana/dashboards/coffee-telemetry", ".json")
    out += _copies(grafana / "json-en", "grafana/dashboards/coffee-telemetry-en", ".json")
    out.append(SiteFile("grafana/README.md", (grafana / "README.md").read_bytes()))
    return out


def write_site(directory: Path, site_files: list[SiteFile], *, force: bool) -> list[Path]:
    """Write ``site_files`` under ``directory``; the paths written.

    Raises:
        FileExistsError: Some targets exist and ``force`` is false (nothing written);
            its ``filename`` lists them, one per line.
    """
    targets = [directory / f.path for f in site_files]
    if not force:
        existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
        if existing:
            raise FileExistsError(0, "exists", "\n".join(existing))
    for target, site_file in zip(targets, site_files, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.init-tmp")
        tmp.write_bytes(site_file.content)
        tmp.chmod(site_file.mode)
        os.replace(tmp, target)
    return targets


def _executable() -> str:
    beside = Path(sys.executable).parent / "coffee-telemetry"
    return str(beside) if beside.exists() else UNIT_EXECUTABLE


def cmd_init(args: argparse.Namespace) -> int:
    """Write a new site's config, unit, udev rules, broker config and Grafana provisioning."""
    directory = Path(args.dir).absolute()
    if directory.exists() and not directory.is_dir():
        print(f"error: {directory} exists and is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        site_files = render_site(
            directory,
            site=args.site,
            name=args.name or args.site,
            data_dir=args.data_dir,
            executable=_executable(),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        written = write_site(directory, site_files, force=args.force)
    except FileExistsError as exc:
        for path in str(exc.filename).splitlines():
            print(f"error: {path} already exists", file=sys.stderr)
        print("nothing written; use --force to overwrite these files", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot write in {directory}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for target in written:
        print(f"wrote {target}")
    config = directory / "site.toml"
    print(
        f"\nNext: edit {config} (devices, broker account), then\n"
        f"  coffee-telemetry check-config {config}\n"
        f"  coffee-telemetry run --once -c {config}\n"
        f"Install the unit, udev rules and broker files as their comments say"
        f" ({directory / 'mosquitto' / 'README.md'})."
    )
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``init`` to the command's subparsers."""
    init = sub.add_parser(
        "init",
        help="write a new site's config, systemd/udev files, broker config and Grafana files",
        description="Write site.toml (commented, valid as it stands), systemd/ and udev/"
        " files, mosquitto/ broker config and grafana/ provisioning into DIR.",
    )
    init.add_argument("dir", metavar="DIR", help="where to write (created if missing)")
    init.add_argument("--site", default="armazem", help="the site id (default: armazem)")
    init.add_argument("--name", help="the site's name, as people say it (default: the id)")
    init.add_argument(
        "--data-dir", default=UNIT_DATA_DIR, help=f"the agent's data directory ({UNIT_DATA_DIR})"
    )
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.set_defaults(func=cmd_init)
