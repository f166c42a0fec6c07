"""Fuzz the backup's boundaries: the manifest parser and the archive reader take bytes
from a file anyone may have edited; nothing but a ``BackupError`` escapes them."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.backup import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MEMBERS,
    BackupError,
    FileEntry,
    Kind,
    Manifest,
    encode_manifest,
    parse_manifest,
    read_backup,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

KINDS: dict[str, Kind] = {
    "site": "config",
    "evidence_key": "config",
    "alerts": "json",
    "alerts_recent": "json",
}

entries = st.builds(
    lambda store, version, size, digest: FileEntry(
        store,
        KINDS.get(store, "sqlite"),
        version,
        size,
        digest,
    ),
    st.sampled_from(sorted(MEMBERS)),
    st.none() | st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**50),
    st.text("0123456789abcdef", min_size=64, max_size=64),
)
printable = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("çãéõ"),
    min_size=0,
    max_size=40,
)
manifests = st.builds(
    Manifest,
    format_version=st.integers(min_value=1, max_value=FORMAT_VERSION),
    created=printable,
    agent_version=printable,
    site=printable,
    with_outbox=st.booleans(),
    files=st.lists(entries, unique_by=lambda e: e.store, max_size=len(MEMBERS)).map(tuple),
)


def parse_or_refuse(data: bytes) -> Manifest | None:
    try:
        manifest = parse_manifest(data)
    except BackupError:
        return None
    # Whatever is accepted names only the fixed members: nothing from outside is a path.
    assert all(f.member == MEMBERS[f.store] for f in manifest.files)
    assert len({f.store for f in manifest.files}) == len(manifest.files)
    return manifest


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_random_bytes_are_refused_or_parsed(data: bytes) -> None:
    parse_or_refuse(data)


@given(json_values)
@settings(max_examples=300)
def test_random_json_is_refused_or_parsed(doc: object) -> None:
    parse_or_refuse(json.dumps(doc).encode())


@given(manifests)
@settings(max_examples=200)
def test_a_manifest_reads_back_equal(manifest: Manifest) -> None:
    assert parse_manifest(encode_manifest(manifest)) == manifest


@given(manifests, st.data())
@settings(max_examples=300)
def test_an_edited_field_is_refused_or_still_well_formed(
    manifest: Manifest, data: st.DataObject
) -> None:
    doc = json.loads(encode_manifest(manifest))
    if doc["files"] and data.draw(st.booleans()):
        target = data.draw(st.sampled_from(doc["files"]))
    else:
        target = doc
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    target[key] = data.draw(json_values)
    parsed = parse_or_refuse(json.dumps(doc).encode())
    if parsed is not None:
        assert parsed.format_version <= FORMAT_VERSION


def tar_of(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                info.size = 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


names = st.sampled_from([MANIFEST, *MEMBERS.values(), "../escape", "/abs", "data/x", ""])
member_kinds = st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE])


@given(
    st.lists(st.tuples(names, st.binary(max_size=64), member_kinds), max_size=6),
    st.booleans(),
    st.binary(max_size=64),
)
@settings(max_examples=200, deadline=None)
def test_random_archives_are_refused_or_read_into_the_folder_only(
    members: list[tuple[str, bytes, bytes]], with_manifest: bool, noise: bytes
) -> None:
    if with_manifest:
        manifest = json.dumps(
            {
                "format": FORMAT,
                "format_version": 1,
                "created": "c",
                "agent_version": "v",
                "site": "s",
                "with_outbox": False,
                "files": [],
            }
        ).encode()
        members = [(MANIFEST, manifest, tarfile.REGTYPE), *members]
    raw = tar_of(members) + noise
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "backup"
        archive.write_bytes(raw)
        into = root / "into"
        into.mkdir()
        try:
            manifest_read = read_backup(archive, into, supported={"outbox": 3})
        except BackupError:
            manifest_read = None
        written = {p.name for p in into.iterdir()}
        assert written <= set(MEMBERS)  # named by store, never by the archive
        assert sorted(p.name for p in root.iterdir()) == ["backup", "into"]
        if manifest_read is not None:
            assert written == {f.store for f in manifest_read.files}
