"""``coffee-telemetry member`` and the evidence commands of ``coffee-telemetry lot``.

    coffee-telemetry member import -c site.toml FILE --code C --name N
        [--document D] [--place P] [--area-ha HA]
    coffee-telemetry member list -c site.toml
    coffee-telemetry member forget -c site.toml CODE
    coffee-telemetry lot members -c site.toml LOT [--add CODE ...]
    coffee-telemetry lot pack -c site.toml LOT -o DIR [--lang en]
    coffee-telemetry lot verify-pack DIR

``import`` reads a member's plots from GeoJSON, KML or a CAR zipped shapefile
(``evidence.geo``: every refusal says why, nothing is written) into the evidence store;
``forget`` erases the member's personal data and keeps a pseudonym (LGPD). ``pack`` writes
a lot's evidence pack (``evidence.pack``) and records its manifest; ``verify-pack`` checks
a pack offline, with no site file: exit status 0 only when it is intact.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.config import Config

if TYPE_CHECKING:
    from coffee_telemetry.agent.evidence.store import EvidenceStore

__all__ = ["add_parser", "evidence_path"]


def evidence_path(cfg: Config) -> Path:
    """Where the evidence store lives: ``data_dir/evidence.sqlite3``."""
    return cfg.agent.data_dir / "evidence.sqlite3"


#: What the ``evidence`` extra brings; the commands check for it before importing it, so
#: the rest of the CLI neither needs it nor pays for importing it.
_EXTRA = ("pyproj", "shapefile", "shapely", "defusedxml", "cryptography")

Command = Callable[[argparse.Namespace], int]


def _needs_extra(command: Command) -> Command:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        missing = [name for name in _EXTRA if importlib.util.find_spec(name) is None]
        if missing:
            print(
                "erro/error: falta o extra evidence / the evidence extra is missing"
                f" ({', '.join(missing)}): pip install 'coffee-telemetry[evidence]'",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        return command(args)

    return run


def _store(cfg: Config) -> EvidenceStore:
    from coffee_telemetry.agent.evidence.store import EvidenceStore

    return EvidenceStore.open(evidence_path(cfg))


def cmd_member_import(args: argparse.Namespace) -> int:
    """Import a member's plots from a file."""
    from coffee_telemetry.agent.evidence.geo import MAX_FILE_BYTES, GeoError, read_plots

    cfg = load(args.config)
    try:
        with open(args.file, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        print(f"erro/error: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    store = _store(cfg)
    try:
        plots = read_plots(Path(args.file).name, data, declared_ha=args.area_ha)
        store.import_member(
            args.code,
            plots,
            name=args.name,
            document=args.document,
            place=args.place,
            at_ns=time.time_ns(),
        )
    except GeoError as exc:
        print(f"erro/error: {exc}; nada foi gravado / nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        store.close()
    area = sum(p.area_ha for p in plots)
    whole = (
        " (contorno do imóvel inteiro / whole-property outline)"
        if any(p.whole_property for p in plots)
        else ""
    )
    print(f"{args.code}: {len(plots)} talhões/plots, {area:.4f} ha{whole}")
    return EXIT_OK


def cmd_member_list(args: argparse.Namespace) -> int:
    """List members and their plots."""
    cfg = load(args.config)
    store = _store(cfg)
    try:
        for m in store.members():
            plots = store.plots(m.code)
            area = sum(p.area_ha for p in plots)
            who = f"{m.pseudonym} (esquecido/forgotten)" if m.forgotten else m.name
            print(f"{m.code}\t{who}\t{m.plots} talhões/plots\t{area:.4f} ha")
    finally:
        store.close()
    return EXIT_OK


def cmd_member_forget(args: argparse.Namespace) -> int:
    """Erase a member's personal data, keeping a pseudonym."""
    cfg = load(args.config)
    store = _store(cfg)
    try:
        if not store.forget(args.code, at_ns=time.time_ns()):
            print(
                f"erro/error: membro desconhecido / unknown member {args.code!r}", file=sys.stderr
            )
            return EXIT_FAILURE
        member = store.member(args.code)
    finally:
        store.close()
    now_as = member.pseudonym if member is not None else "-"
    print(f"{args.code}: dados pessoais apagados / personal data erased; agora/now {now_as}")
    return EXIT_OK


def cmd_lot_members(args: argparse.Namespace) -> int:
    """Link members to a lot, or list them."""
    from coffee_telemetry.agent.evidence.geo import GeoError
    from coffee_telemetry.agent.lots.store import LotError, validate_lot

    cfg = load(args.config)
    try:
        lot = validate_lot(args.lot)
    except LotError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    store = _store(cfg)
    try:
        for code in args.add or ():
            store.link(lot, code)
        for m in store.lot_members(lot):
            print(f"{lot}\t{m.code}\t{m.pseudonym if m.forgotten else m.name}")
    except GeoError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        store.close()
    return EXIT_OK


def cmd_lot_pack(args: argparse.Namespace) -> int:
    """Write a lot's signed evidence pack into a new folder."""
    from coffee_telemetry.agent.evidence.pack import (
        GEOJSON_NAME,
        MANIFEST_NAME,
        NO_GEOLOCATION,
        SIGNATURE_NAME,
        box_key,
        fingerprint,
        plots_geojson,
        sign_manifest,
    )
    from coffee_telemetry.agent.lots.export import (
        Lang,
        configured_csv,
        configured_report,
        report_file_name,
    )
    from coffee_telemetry.agent.lots.records import configured_lot_records
    from coffee_telemetry.agent.lots.store import LotError, validate_lot

    cfg = load(args.config)
    lang: Lang = "en" if args.lang == "en" else "pt-BR"
    target = Path(args.output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(f"erro/error: {target} existe e não está vazio / is not empty", file=sys.stderr)
        return EXIT_CONFIG
    try:
        code = validate_lot(args.lot)
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        record = records.record(code)
    finally:
        records.close()
    if record is None:
        print(f"erro/error: lote desconhecido / unknown lot {code!r}", file=sys.stderr)
        return EXIT_FAILURE
    now = time.time_ns()
    store = _store(cfg)
    try:
        members = store.lot_members(code)
        plots = [p for m in members for p in store.plots(m.code)]
        geojson, geolocated = plots_geojson(members, plots)
        files = {
            GEOJSON_NAME: geojson,
            report_file_name(code, csv=True): configured_csv([record], cfg, lang=lang),
            report_file_name(code): configured_report(record, cfg, generated_ns=now, lang=lang),
        }
        key = box_key(cfg.agent.data_dir)
        manifest, signature = sign_manifest(
            key,
            lot=code,
            issued_ns=now,
            files=files,
            geolocated=geolocated,
            members=[m.pseudonym if m.forgotten else m.code for m in members],
        )
        _write_folder(target, {**files, MANIFEST_NAME: manifest, SIGNATURE_NAME: signature})
        store.record_manifest(code, manifest, at_ns=now)
    except OSError as exc:
        print(f"erro/error: cannot write {target}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
    status = "geolocalizado/geolocated" if geolocated else NO_GEOLOCATION
    print(f"{target}: {code}, {len(plots)} talhões/plots, {status}")
    print(f"chave/key {fingerprint(key.public_key())}")
    return EXIT_OK


def _write_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a sibling temporary folder, then move it to ``target``."""
    partial = target.with_name(target.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, body in files.items():
        (partial / name).write_bytes(body)
    if target.exists():
        target.rmdir()
    partial.replace(target)


def cmd_lot_verify_pack(args: argparse.Namespace) -> int:
    """Check a pack folder offline."""
    from coffee_telemetry.agent.evidence.pack import verify_pack

    check = verify_pack(Path(args.folder))
    for problem in check.problems:
        print(f"erro/error: {problem}", file=sys.stderr)
    if not check.ok:
        print("pacote RECUSADO / pack REFUSED")
        return EXIT_FAILURE
    print(f"pacote íntegro / pack intact: lote/lot {check.lot}, {check.geolocation}")
    print(f"assinado por / signed by {check.fingerprint}")
    return EXIT_OK


def _lot_actions(sub: Subcommands) -> Subcommands:
    """The subcommands of ``lot`` (added by ``cli.lots``), where the pack commands go."""
    lot = sub.choices["lot"]
    for action in lot._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the lot command has no subcommands")


def add_parser(sub: Subcommands) -> None:
    """Add ``member`` and ``lot members|pack|verify-pack`` (after ``cli.lots``)."""
    member = sub.add_parser("member", help="members (producers) and their plots")
    actions = member.add_subparsers(dest="action", required=True)
    imp = add_config_command(
        actions,
        "import",
        summary="import a member's plots (GeoJSON, KML, CAR zip)",
        run=_needs_extra(cmd_member_import),
    )
    imp.add_argument("file", help=".geojson, .kml or the CAR's zipped shapefile (.zip)")
    imp.add_argument("--code", required=True, help="member code")
    imp.add_argument("--name", required=True, help="producer name")
    imp.add_argument("--document", help="CPF/CNPJ or CAR number (optional)")
    imp.add_argument("--place", help="production place (farm, municipality)")
    imp.add_argument(
        "--area-ha", dest="area_ha", type=float, help="area of a plot given as a point"
    )
    add_config_command(
        actions, "list", summary="members and their plots", run=_needs_extra(cmd_member_list)
    )
    forget = add_config_command(
        actions,
        "forget",
        summary="erase a member's personal data (LGPD)",
        run=_needs_extra(cmd_member_forget),
    )
    forget.add_argument("code", help="member code")

    lot_actions = _lot_actions(sub)
    members = add_config_command(
        lot_actions,
        "members",
        summary="link members to a lot, or list them",
        run=_needs_extra(cmd_lot_members),
    )
    members.add_argument("lot", help="lot code")
    members.add_argument("--add", nargs="+", metavar="CODE", help="member codes to link")
    pack = add_config_command(
        lot_actions,
        "pack",
        summary="write a lot's signed evidence pack",
        run=_needs_extra(cmd_lot_pack),
    )
    pack.add_argument("lot", help="lot code")
    pack.add_argument("-o", "--output", required=True, help="new (or empty) folder")
    pack.add_argument("--lang", choices=("pt-BR", "en"), default="pt-BR")
    verify = lot_actions.add_parser("verify-pack", help="check a lot pack offline")
    verify.add_argument("folder", help="the pack's folder")
    verify.set_defaults(func=_needs_extra(cmd_lot_verify_pack))
