"""Tests for rayplex.artifacts: safe paths, atomic writes, chunk files, listing."""

from __future__ import annotations

import doctest
import os
import pickle
import re
import time
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayplex import artifacts
from rayplex.artifacts import (
    TEMP_PREFIX,
    ArtifactInfo,
    ArtifactStore,
    TornChunkWarning,
    decode_chunks,
    encode_chunk,
    safe_relpath,
)

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def layout(tmp_path: Path) -> tuple[ArtifactStore, Path]:
    """A store at ``tmp/logdir/artifacts`` and an empty sibling ``tmp/outside``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return ArtifactStore(tmp_path / "logdir" / "artifacts"), outside


@pytest.fixture
def store(layout: tuple[ArtifactStore, Path]) -> ArtifactStore:
    return layout[0]


def entries_outside(base: Path, root: Path) -> set[str]:
    """Every file, directory or symlink under ``base`` that is not inside ``root``."""
    return {
        str(p.relative_to(base)) for p in base.rglob("*") if p != root and root not in p.parents
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


# --------------------------------------------------------------------------- safe_relpath


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a", "a"),
        ("g/n/file.pkl", "g/n/file.pkl"),
        ("g//n///file", "g/n/file"),
        ("./g/./n/.", "g/n"),
        ("g/n/", "g/n"),
        ("g/n/.hidden", "g/n/.hidden"),
        ("g/n/...", "g/n/..."),
        ("g/n/..x", "g/n/..x"),
        ("g/n/résumé ünïcode.txt", "g/n/résumé ünïcode.txt"),
        ("g/n/with:colon", "g/n/with:colon"),
    ],
)
def test_safe_relpath_normalises_valid_paths(raw: str, expected: str) -> None:
    assert safe_relpath(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"g/n", "must be a str"),
        (None, "must be a str"),
        (Path("g/n"), "must be a str"),
        ("", "must not be empty"),
        ("/etc/passwd", "not absolute"),
        ("//server/share", "not absolute"),
        ("C:\\x", "not absolute"),
        ("c:/x", "not absolute"),
        ("C:x", "not absolute"),
        ("\\\\server\\x", "not absolute"),
        ("..", "'..' components"),
        ("../x", "'..' components"),
        ("a/../../x", "'..' components"),
        ("a/b/..", "'..' components"),
        ("a\x00b", "NUL"),
        ("a\nb", "control character U+000A"),
        ("a\x1fb", "control character U+001F"),
        ("a\x7fb", "control character U+007F"),
        ("a\x85b", "control character U+0085"),
        ("a\\b", "backslashes are not allowed"),
        ("a/\ud800", "not encodable as UTF-8"),
        ("a/" + "x" * 256, "longer than 255"),
        ("a/" + "é" * 128, "longer than 255"),
        ("/".join(["y" * 200] * 6), "longer than 1024"),
        (".", "names no file"),
        ("./././", "names no file"),
        ("g/.tmp-123", "reserved prefix"),
        (".tmp-dir/file", "reserved prefix"),
    ],
)
def test_safe_relpath_rejects_unsafe_paths_with_a_specific_message(
    raw: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        safe_relpath(raw)  # type: ignore[arg-type]


def test_safe_relpath_accepts_components_of_exactly_255_bytes() -> None:
    name = "x" * 255
    assert safe_relpath(f"g/{name}") == f"g/{name}"


def test_safe_relpath_measures_the_total_length_after_normalisation() -> None:
    padded = "a" + "/" * 5000 + "b"
    assert safe_relpath(padded) == "a/b"


_PIECES = st.sampled_from(
    ["a", "b", "é", ".", "..", "...", "/", "//", "\\", "C:", ":", "\x00", "\n", " ", ".tmp-"]
)
_PATHS = st.one_of(st.text(), st.lists(_PIECES, max_size=12).map("".join))


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_PATHS)
def test_safe_relpath_either_rejects_or_returns_a_path_confined_to_the_root(raw: str) -> None:
    try:
        result = safe_relpath(raw)
    except ValueError:
        return
    parts = result.split("/")
    assert ".." not in parts
    assert "" not in parts and "." not in parts
    assert "\\" not in result and "\x00" not in result
    assert safe_relpath(result) == result
    root = "/srv/logdir/artifacts"
    joined = os.path.normpath(os.path.join(root, result))
    assert os.path.commonpath([root, joined]) == root
    assert joined != root


# --------------------------------------------------------------------------- resolve


def test_resolve_joins_the_normalised_path_onto_the_root(store: ArtifactStore) -> None:
    assert store.resolve("g//n/./f.txt") == store.root / "g" / "n" / "f.txt"


def test_resolve_creates_nothing_on_disk(store: ArtifactStore) -> None:
    store.resolve("g/n/f.txt")
    assert not store.root.exists()


def test_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ArtifactStore("artifacts").root == tmp_path / "artifacts"


def test_a_symlink_inside_a_client_directory_pointing_inside_it_is_allowed(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/n/real/f.txt", b"data")
    (store.root / "g/n/alias").symlink_to(store.root / "g/n/real", target_is_directory=True)
    assert store.read_bytes("g/n/alias/f.txt") == b"data"
    store.write_bytes("g/n/alias/g.txt", b"more")
    assert (store.root / "g/n/real/g.txt").read_bytes() == b"more"


def test_a_symlinked_root_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "real_root").mkdir()
    (tmp_path / "link_root").symlink_to(tmp_path / "real_root", target_is_directory=True)
    store = ArtifactStore(tmp_path / "link_root")
    store.write_bytes("g/n/f", b"x")
    assert (tmp_path / "real_root" / "g" / "n" / "f").read_bytes() == b"x"


# --------------------------------------------------------------------------- escapes


ESCAPES = ["..", "../x", "a/../../x", "../../outside/x", "/tmp/x", "C:\\x", "a\x00b", "a\\..\\x"]


@pytest.mark.parametrize("rel", ESCAPES)
def test_every_write_method_rejects_a_malicious_path_and_writes_nothing_outside(
    layout: tuple[ArtifactStore, Path], tmp_path: Path, rel: str
) -> None:
    store, outside = layout
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    before = entries_outside(tmp_path, store.root)
    with pytest.raises(ValueError):
        store.write_bytes(rel, b"x")
    with pytest.raises(ValueError):
        store.append_chunk(rel, b"x")
    assert entries_outside(tmp_path, store.root) == before
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("rel", ESCAPES)
def test_every_read_method_rejects_a_malicious_path(store: ArtifactStore, rel: str) -> None:
    for call in (store.read_bytes, store.read_chunks, store.resolve, store.list):
        with pytest.raises(ValueError):
            call(rel)


def test_a_symlinked_directory_pointing_outside_the_root_is_rejected_before_writing(
    layout: tuple[ArtifactStore, Path], tmp_path: Path
) -> None:
    store, outside = layout
    (store.root / "g").mkdir(parents=True)
    (store.root / "g" / "evil").symlink_to(outside, target_is_directory=True)
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    for rel in ("g/evil/x.txt", "g/evil/deeper/x.txt", "g/evil"):
        with pytest.raises(ValueError, match="outside the artifact root"):
            store.write_bytes(rel, b"x")
        with pytest.raises(ValueError, match="outside the artifact root"):
            store.append_chunk(rel, b"x")
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_pointing_outside_the_root_is_neither_written_nor_read(
    layout: tuple[ArtifactStore, Path],
) -> None:
    store, outside = layout
    secret = outside / "secret.txt"
    (store.root / "g").mkdir(parents=True)
    (store.root / "g" / "dangling").symlink_to(outside / "new.txt")
    (store.root / "g" / "leak").symlink_to(secret)
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.write_bytes("g/dangling", b"x")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.append_chunk("g/dangling", b"x")
    assert list(outside.iterdir()) == []

    secret.write_bytes(b"top secret")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.read_bytes("g/leak")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.write_bytes("g/leak", b"overwritten")
    assert secret.read_bytes() == b"top secret"


def test_a_symlink_to_the_root_itself_is_rejected(store: ArtifactStore) -> None:
    store.root.mkdir(parents=True)
    (store.root / "self").symlink_to(store.root, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.write_bytes("self", b"x")


def test_appending_to_a_hard_link_is_refused(layout: tuple[ArtifactStore, Path]) -> None:
    store, outside = layout
    target = outside / "victim.bin"
    target.write_bytes(b"")
    (store.root / "g").mkdir(parents=True)
    os.link(target, store.root / "g" / "hard.pkl")
    with pytest.raises(ValueError, match="hard links"):
        store.append_chunk("g/hard.pkl", b"x")
    assert target.read_bytes() == b""


# --------------------------------------------------------------------------- write/read


def test_write_bytes_then_read_bytes_round_trips(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 100
    path = store.write_bytes("g/n/blob.bin", data)
    assert path == store.root / "g" / "n" / "blob.bin"
    assert store.read_bytes("g/n/blob.bin") == data


def test_write_bytes_accepts_bytearray_and_memoryview(store: ArtifactStore) -> None:
    store.write_bytes("a", bytearray(b"ba"))
    store.write_bytes("b", memoryview(b"mv"))
    assert (store.read_bytes("a"), store.read_bytes("b")) == (b"ba", b"mv")


def test_write_bytes_rejects_text_with_a_type_error(store: ArtifactStore) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        store.write_bytes("a", "text")  # type: ignore[arg-type]
    assert not store.root.exists()


def test_write_bytes_replaces_previous_contents(store: ArtifactStore) -> None:
    store.write_bytes("g/x", b"a much longer first version")
    store.write_bytes("g/x", b"v2")
    assert store.read_bytes("g/x") == b"v2"


def test_empty_files_round_trip(store: ArtifactStore) -> None:
    store.write_bytes("g/empty", b"")
    assert store.read_bytes("g/empty") == b""


def test_written_files_get_normal_permissions(store: ArtifactStore) -> None:
    umask = os.umask(0o022)
    try:
        path = store.write_bytes("g/perm", b"x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_reading_a_missing_artifact_names_the_relative_path(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError, match="g/n/missing.pkl") as info:
        store.read_bytes("g//n/missing.pkl")
    assert info.value.filename == "g/n/missing.pkl"
    with pytest.raises(FileNotFoundError, match="g/n/missing.pkl"):
        store.read_chunks("g/n/missing.pkl")


def test_reading_below_a_file_is_reported_as_missing(store: ArtifactStore) -> None:
    store.write_bytes("g/file", b"x")
    with pytest.raises(FileNotFoundError, match="g/file/sub"):
        store.read_bytes("g/file/sub")


def test_reading_a_directory_raises_is_a_directory_error(store: ArtifactStore) -> None:
    store.write_bytes("g/n/f", b"x")
    with pytest.raises(IsADirectoryError, match="g/n"):
        store.read_bytes("g/n")


def test_a_failing_replace_leaves_the_old_contents_and_no_temp_file(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_bytes("g/n/state.pkl", b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(artifacts.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.write_bytes("g/n/state.pkl", b"new contents")
    monkeypatch.undo()
    assert store.read_bytes("g/n/state.pkl") == b"old"
    assert temp_files(store.root) == []


def test_a_failing_fsync_leaves_the_old_contents_and_no_temp_file(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_bytes("g/n/state.pkl", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("simulated disk error")

    monkeypatch.setattr(artifacts.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated disk error"):
        store.write_bytes("g/n/state.pkl", b"new contents")
    monkeypatch.undo()
    assert store.read_bytes("g/n/state.pkl") == b"old"
    assert temp_files(store.root) == []


def test_writing_onto_a_directory_fails_without_leaving_a_temp_file(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/dir/f", b"x")
    with pytest.raises(OSError):
        store.write_bytes("g/dir", b"x")
    assert temp_files(store.root) == []


# --------------------------------------------------------------------------- chunks


def test_encode_chunk_uses_length_payload_crc_framing() -> None:
    record = encode_chunk(b"abc")
    assert len(record) == 3 + 12
    assert record[:8] == (3).to_bytes(8, "little")
    assert record[8:11] == b"abc"
    assert record[11:] == zlib.crc32(record[:11]).to_bytes(4, "little")


def test_decode_chunks_reports_where_the_intact_prefix_ends() -> None:
    blob = encode_chunk(b"a") + encode_chunk(b"") + encode_chunk(b"ccc")
    assert decode_chunks(blob) == ([b"a", b"", b"ccc"], len(blob), None)
    chunks, end, problem = decode_chunks(blob + b"\x01\x02")
    assert (chunks, end) == ([b"a", b"", b"ccc"], len(blob))
    assert problem is not None and "truncated record header" in problem


def test_appended_pickles_read_back_in_order(store: ArtifactStore) -> None:
    objects = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(20)] + [b"", None]
    for obj in objects:
        store.append_chunk("g/n/metrics.pkl", pickle.dumps(obj))
    assert [pickle.loads(c) for c in store.read_chunks("g/n/metrics.pkl")] == objects


def test_empty_chunks_are_preserved(store: ArtifactStore) -> None:
    store.append_chunk("c", b"")
    store.append_chunk("c", b"x")
    assert store.read_chunks("c") == [b"", b"x"]


def test_a_fresh_store_on_the_same_root_keeps_appending(store: ArtifactStore) -> None:
    store.append_chunk("g/c", b"one")
    again = ArtifactStore(store.root)
    again.append_chunk("g/c", b"two")
    assert store.read_chunks("g/c") == [b"one", b"two"]


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 11, 12, 13])
def test_a_torn_last_chunk_is_dropped_with_a_warning_and_earlier_chunks_survive(
    store: ArtifactStore, cut: int
) -> None:
    for payload in (b"first", b"second", b"third!"):
        path = store.append_chunk("g/n/log.pkl", payload)
    size = path.stat().st_size
    os.truncate(path, size - cut)
    with pytest.warns(TornChunkWarning, match="g/n/log.pkl"):
        assert store.read_chunks("g/n/log.pkl") == [b"first", b"second"]


def test_a_corrupt_last_chunk_is_detected_by_its_crc(store: ArtifactStore) -> None:
    store.append_chunk("c.pkl", b"good")
    path = store.append_chunk("c.pkl", b"soon corrupt")
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(TornChunkWarning, match="crc mismatch"):
        assert store.read_chunks("c.pkl") == [b"good"]


def test_a_torn_length_field_claiming_a_huge_payload_is_not_trusted(
    store: ArtifactStore,
) -> None:
    path = store.append_chunk("c.pkl", b"good")
    with open(path, "ab") as fh:
        fh.write((2**63).to_bytes(8, "little") + b"xxxx")
    with pytest.warns(TornChunkWarning, match="declares"):
        assert store.read_chunks("c.pkl") == [b"good"]


def test_a_file_that_is_not_a_chunk_file_yields_no_chunks_and_a_warning(
    store: ArtifactStore,
) -> None:
    store.write_bytes("plain.txt", b"just some text, not framed")
    with pytest.warns(TornChunkWarning):
        assert store.read_chunks("plain.txt") == []


def test_an_intact_chunk_file_reads_without_warnings(store: ArtifactStore) -> None:
    store.append_chunk("c", b"x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_chunks("c") == [b"x"]


@pytest.mark.parametrize("same_instance", [True, False])
def test_appending_after_a_torn_tail_repairs_it_so_new_chunks_stay_readable(
    store: ArtifactStore, same_instance: bool
) -> None:
    store.append_chunk("g/log.pkl", b"a")
    path = store.append_chunk("g/log.pkl", b"b-torn")
    os.truncate(path, path.stat().st_size - 2)
    writer = store if same_instance else ArtifactStore(store.root)
    with pytest.warns(TornChunkWarning, match="truncating"):
        writer.append_chunk("g/log.pkl", b"c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_chunks("g/log.pkl") == [b"a", b"c"]


def test_a_failed_append_is_rolled_back(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append_chunk("c", b"kept")

    def broken_fsync(fd: int) -> None:
        raise OSError("simulated disk error")

    monkeypatch.setattr(artifacts.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated disk error"):
        store.append_chunk("c", b"lost")
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_chunks("c") == [b"kept"]
    store.append_chunk("c", b"next")
    assert store.read_chunks("c") == [b"kept", b"next"]


def test_append_after_write_bytes_is_refused_and_keeps_the_file(store: ArtifactStore) -> None:
    store.append_chunk("c", b"x")
    store.write_bytes("c", b"garbage!" * 3)  # now a plain file: appending would destroy it
    with pytest.raises(ValueError, match="append=True"):
        store.append_chunk("c", b"y")
    assert store.read_bytes("c") == b"garbage!" * 3


# --------------------------------------------------------------------------- list


def test_list_of_an_empty_or_missing_root_is_empty(store: ArtifactStore) -> None:
    assert store.list() == []
    assert store.list("g/n") == []


def test_list_reports_every_file_sorted_with_size_and_mtime(store: ArtifactStore) -> None:
    before = time.time()
    store.write_bytes("b/n/z.bin", b"zz")
    store.write_bytes("a/n/y.bin", b"y")
    store.append_chunk("a/n/c.pkl", b"chunk")
    store.write_bytes("a/m/deep/er/x.bin", b"")
    infos = store.list()
    assert [i.path for i in infos] == [
        "a/m/deep/er/x.bin",
        "a/n/c.pkl",
        "a/n/y.bin",
        "b/n/z.bin",
    ]
    assert [i.size for i in infos] == [0, 5 + 12, 1, 2]
    assert all(isinstance(i, ArtifactInfo) for i in infos)
    assert all(before - 5 <= i.mtime <= time.time() + 5 for i in infos)


def test_list_filters_by_whole_path_components(store: ArtifactStore) -> None:
    store.write_bytes("g/run1/a", b"1")
    store.write_bytes("g/run1/b", b"2")
    store.write_bytes("g/run10/c", b"3")
    assert [i.path for i in store.list("g/run1")] == ["g/run1/a", "g/run1/b"]
    assert [i.path for i in store.list("g/run1/")] == ["g/run1/a", "g/run1/b"]
    assert [i.path for i in store.list("g/run")] == []
    assert [i.path for i in store.list("g/run1/a")] == ["g/run1/a"]


def test_list_hides_temp_files(store: ArtifactStore) -> None:
    store.write_bytes("g/n/real", b"x")
    (store.root / "g" / "n" / f"{TEMP_PREFIX}0123abcd").write_bytes(b"partial")
    assert [i.path for i in store.list()] == ["g/n/real"]


def test_list_skips_symlinks_leading_outside_the_root(
    layout: tuple[ArtifactStore, Path],
) -> None:
    store, outside = layout
    (outside / "secret.txt").write_bytes(b"s")
    store.write_bytes("g/real.txt", b"r")
    (store.root / "g" / "dir_out").symlink_to(outside, target_is_directory=True)
    (store.root / "g" / "file_out").symlink_to(outside / "secret.txt")
    (store.root / "g" / "dangling").symlink_to(outside / "missing")
    assert [i.path for i in store.list()] == ["g/real.txt"]


def test_list_reports_symlinked_files_inside_the_root_but_not_symlinked_dirs(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/n/real.txt", b"abc")
    (store.root / "g/n/alias.txt").symlink_to(store.root / "g/n/real.txt")
    (store.root / "loop").symlink_to(store.root, target_is_directory=True)
    assert [(i.path, i.size) for i in store.list()] == [("g/n/alias.txt", 3),
                                                        ("g/n/real.txt", 3)]


def test_list_skips_files_whose_names_are_not_valid_artifact_paths(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/ok", b"x")
    (store.root / "g" / "bad\nname").write_bytes(b"x")
    (store.root / "g" / "back\\slash").write_bytes(b"x")
    assert [i.path for i in store.list()] == ["g/ok"]


# --------------------------------------------------------------------------- docs


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(artifacts, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- Logger.upload_file


def test_upload_file_into_a_target_ending_in_slash_keeps_the_file_name(
    experiment, tmp_path: Path
) -> None:
    # As in ML-Logger: "files/" is a directory, so two uploads there never overwrite each other.
    first, second = tmp_path / "config.yaml", tmp_path / "sub" / "notes.txt"
    second.parent.mkdir()
    first.write_bytes(b"lr: 0.1\n")
    second.write_bytes(b"hello\n")
    import rayplex

    experiment.register_normal_group("learner")
    log = rayplex.get_logger("learner/upload")
    stored = [log.upload_file(first, "files/"), log.upload_file(str(second), "files/")]
    log.upload_file(first)  # no target: its own name
    log.upload_file(first, "renamed.yaml")
    assert log.load_bytes("files/config.yaml") == b"lr: 0.1\n"
    assert log.load_bytes("files/notes.txt") == b"hello\n"
    assert log.load_bytes("config.yaml") == b"lr: 0.1\n"
    assert log.load_bytes("renamed.yaml") == b"lr: 0.1\n"
    assert [os.path.basename(p) for p in stored] == ["config.yaml", "notes.txt"]
    files = sorted(p.relative_to(Path(experiment.logdir) / "artifacts").as_posix()
                   for p in (Path(experiment.logdir) / "artifacts").rglob("*") if p.is_file())
    assert files == ["learner/upload/config.yaml", "learner/upload/files/config.yaml",
                     "learner/upload/files/notes.txt", "learner/upload/renamed.yaml"]


# --------------------------------------------------------------------------- file operations


def test_append_bytes_concatenates_plain_bytes(store: ArtifactStore) -> None:
    store.append_bytes("g/n/rows.jsonl", b'{"a": 1}\n')
    store.append_bytes("g/n/rows.jsonl", bytearray(b'{"a": 2}\n'))
    assert store.read_bytes("g/n/rows.jsonl") == b'{"a": 1}\n{"a": 2}\n'
    assert temp_files(store.root) == []


def test_append_bytes_refuses_hard_links_and_symlinks_outside(
    layout: tuple[ArtifactStore, Path]
) -> None:
    store, outside = layout
    secret = outside / "secret"
    secret.write_bytes(b"keep")
    store.write_bytes("g/n/x", b"")
    os.link(secret, store.root / "g/n/hard")
    os.symlink(secret, store.root / "g/n/soft")
    with pytest.raises(ValueError, match="hard links"):
        store.append_bytes("g/n/hard", b"more")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.append_bytes("g/n/soft", b"more")
    assert secret.read_bytes() == b"keep"


def test_remove_deletes_files_and_whole_directories_and_ignores_missing_paths(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/n/a.txt", b"a")
    store.write_bytes("g/n/d/b.txt", b"b")
    store.write_bytes("g/n/d/e/c.txt", b"c")
    assert store.remove("g/n/a.txt") is True
    assert store.remove("g/n/d") is True
    assert store.remove("g/n/d") is False
    assert store.remove("g/n/never/there") is False
    assert store.list("g") == []
    assert temp_files(store.root) == []


def test_remove_of_a_symlink_removes_the_link_not_its_target(store: ArtifactStore) -> None:
    store.write_bytes("g/n/real.txt", b"data")
    os.symlink(store.root / "g/n/real.txt", store.root / "g/n/link.txt")
    assert store.remove("g/n/link.txt")
    assert store.read_bytes("g/n/real.txt") == b"data"


@pytest.mark.parametrize("method", ["remove", "glob"])
@pytest.mark.parametrize("path", ["/etc", "//etc/passwd", "../outside", "g/../../x"])
def test_path_taking_operations_refuse_absolute_and_parent_paths(
    store: ArtifactStore, method: str, path: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(path))):
        getattr(store, method)(path)


@pytest.mark.parametrize("method", ["move", "duplicate"])
@pytest.mark.parametrize("bad", ["/etc/passwd", "//srv/x", "../outside/x"])
def test_move_and_duplicate_refuse_escaping_sources_and_targets(
    layout: tuple[ArtifactStore, Path], method: str, bad: str
) -> None:
    store, outside = layout
    store.write_bytes("g/n/a.txt", b"a")
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        getattr(store, method)("g/n/a.txt", bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        getattr(store, method)(bad, "g/n/b.txt")
    assert entries_outside(outside.parent, store.root.parent) == {"outside"}
    assert store.read_bytes("g/n/a.txt") == b"a"


def test_operations_refuse_a_symlinked_directory_leading_outside(
    layout: tuple[ArtifactStore, Path]
) -> None:
    store, outside = layout
    (outside / "victim.txt").write_bytes(b"keep")
    store.write_bytes("g/n/a.txt", b"a")
    os.symlink(outside, store.root / "g/n/out")
    for call in (lambda: store.remove("g/n/out/victim.txt"),
                 lambda: store.move("g/n/a.txt", "g/n/out/a.txt"),
                 lambda: store.duplicate("g/n/out/victim.txt", "g/n/stolen.txt"),
                 lambda: store.append_bytes("g/n/out/victim.txt", b"x")):
        with pytest.raises(ValueError, match="outside the artifact root"):
            call()
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"keep"
    assert store.glob("**/*", wd="g/n") == ["a.txt"]  # the link's contents are not listed


def test_move_renames_files_and_directories(store: ArtifactStore) -> None:
    store.write_bytes("g/n/a.txt", b"a")
    store.write_bytes("g/n/d/b.txt", b"b")
    store.move("g/n/a.txt", "g/n/sub/renamed.txt")
    store.move("g/n/d", "g/n/e")
    assert [i.path for i in store.list("g")] == ["g/n/e/b.txt", "g/n/sub/renamed.txt"]


def test_move_into_an_existing_directory_keeps_the_name_as_shutil_move(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/n/a.txt", b"a")
    store.write_bytes("g/n/dir/keep.txt", b"k")
    store.move("g/n/a.txt", "g/n/dir")
    assert [i.path for i in store.list("g")] == ["g/n/dir/a.txt", "g/n/dir/keep.txt"]


def test_move_replaces_a_file_but_never_a_directory(store: ArtifactStore) -> None:
    store.write_bytes("g/n/a.txt", b"new")
    store.write_bytes("g/n/b.txt", b"old")
    store.move("g/n/a.txt", "g/n/b.txt")
    assert store.read_bytes("g/n/b.txt") == b"new"
    store.write_bytes("g/n/d/x", b"")
    store.write_bytes("g/n/t/d/y", b"")
    with pytest.raises(FileExistsError):
        store.move("g/n/d", "g/n/t")
    with pytest.raises(ValueError, match="into itself"):
        store.move("g/n/t", "g/n/t/d/inner")
    with pytest.raises(FileNotFoundError, match="g/n/missing"):
        store.move("g/n/missing", "g/n/z")


def test_duplicate_copies_files_and_trees_leaving_the_source(store: ArtifactStore) -> None:
    store.write_bytes("g/n/a.txt", b"a")
    store.write_bytes("g/n/d/b.txt", b"b")
    store.write_bytes("g/n/d/e/c.txt", b"c")
    store.duplicate("g/n/a.txt", "g/n/copy/a2.txt")
    store.duplicate("g/n/d", "g/n/d2")
    assert store.read_bytes("g/n/copy/a2.txt") == b"a"
    assert [i.path for i in store.list("g/n/d2")] == ["g/n/d2/b.txt", "g/n/d2/e/c.txt"]
    assert [i.path for i in store.list("g/n/d")] == ["g/n/d/b.txt", "g/n/d/e/c.txt"]
    assert temp_files(store.root) == []


def test_duplicate_merges_into_an_existing_directory_only_if_allowed(
    store: ArtifactStore,
) -> None:
    store.write_bytes("g/n/d/b.txt", b"new")
    store.write_bytes("g/n/t/b.txt", b"old")
    store.write_bytes("g/n/t/keep.txt", b"k")
    with pytest.raises(FileExistsError):
        store.duplicate("g/n/d", "g/n/t", exists_ok=False)
    assert store.read_bytes("g/n/t/b.txt") == b"old"
    store.duplicate("g/n/d", "g/n/t")
    assert store.read_bytes("g/n/t/b.txt") == b"new"
    assert store.read_bytes("g/n/t/keep.txt") == b"k"
    with pytest.raises(ValueError, match="into itself"):
        store.duplicate("g/n/d", "g/n/d/inner")


def test_duplicate_does_not_copy_what_a_symlink_in_the_tree_points_to_outside(
    layout: tuple[ArtifactStore, Path]
) -> None:
    store, outside = layout
    (outside / "secret").write_bytes(b"secret")
    store.write_bytes("g/n/d/a.txt", b"a")
    os.symlink(outside / "secret", store.root / "g/n/d/leak")
    store.duplicate("g/n/d", "g/n/copy")
    assert [i.path for i in store.list("g/n/copy")] == ["g/n/copy/a.txt"]


def test_glob_answers_paths_relative_to_wd_with_directories_sorted(store: ArtifactStore) -> None:
    store.write_bytes("g/n/ckpt/a.pkl", b"")
    store.write_bytes("g/n/ckpt/deep/b.pkl", b"")
    store.write_bytes("g/n/notes.txt", b"")
    (store.root / "g/n/ckpt" / f"{TEMP_PREFIX}{'0' * 32}").write_bytes(b"")
    assert store.glob("**/*.pkl", wd="g/n") == ["ckpt/a.pkl", "ckpt/deep/b.pkl"]
    assert store.glob("*", wd="g/n") == ["ckpt", "notes.txt"]
    assert store.glob("g/n/*.txt") == ["g/n/notes.txt"]
    assert store.glob("**/.*", wd="g/n") == []  # temp files never show
    assert store.glob("*", wd="g/none") == []


# ------------------------------------------------------ client directories (issue 21)


@pytest.fixture
def linked(store: ArtifactStore) -> tuple[ArtifactStore, Path]:
    """``agent/victim`` holds ``ckpt/a.pkl``; ``learner/main/shared`` links into it."""
    store.write_bytes("agent/victim/ckpt/a.pkl", b"v1")
    store.write_bytes("learner/main/own.txt", b"mine")
    os.symlink(store.root / "agent" / "victim", store.root / "learner" / "main" / "shared")
    return store, store.root / "agent" / "victim"


def test_no_read_write_list_or_remove_passes_a_symlink_into_another_clients_directory(
    linked: tuple[ArtifactStore, Path],
) -> None:
    store, victim = linked
    calls = {
        "read_bytes": lambda: store.read_bytes("learner/main/shared/ckpt/a.pkl"),
        "read_chunks": lambda: store.read_chunks("learner/main/shared/ckpt/a.pkl"),
        "write_bytes": lambda: store.write_bytes("learner/main/shared/ckpt/a.pkl", b"x"),
        "write new": lambda: store.write_bytes("learner/main/shared/new.txt", b"x"),
        "append_chunk": lambda: store.append_chunk("learner/main/shared/c.pkl", b"x"),
        "append_bytes": lambda: store.append_bytes("learner/main/shared/r.jsonl", b"x"),
        "remove file": lambda: store.remove("learner/main/shared/ckpt/a.pkl"),
        "remove dir": lambda: store.remove("learner/main/shared/ckpt"),
        "move from": lambda: store.move("learner/main/shared/ckpt/a.pkl", "learner/main/s"),
        "move into": lambda: store.move("learner/main/own.txt", "learner/main/shared/o"),
        "duplicate": lambda: store.duplicate("learner/main/shared", "learner/main/copy"),
        "list": lambda: store.list("learner/main/shared"),
        "glob wd": lambda: store.glob("*", wd="learner/main/shared/ckpt"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="outside its client's directory") as info:
            call()
            pytest.fail(f"{name} acted through the symlink")
        assert "learner/main/shared" in str(info.value), name
    assert [i.path for i in store.list("agent")] == ["agent/victim/ckpt/a.pkl"]
    assert (victim / "ckpt" / "a.pkl").read_bytes() == b"v1"
    assert not (victim / "new.txt").exists()


def test_listing_and_glob_leave_out_what_a_symlink_into_another_client_reaches(
    linked: tuple[ArtifactStore, Path],
) -> None:
    store, _ = linked
    assert [i.path for i in store.list("learner/main")] == ["learner/main/own.txt"]
    assert store.glob("**", wd="learner/main") == ["own.txt"]
    assert store.glob("shared/**", wd="learner/main") == []
    assert store.remove("learner/main/shared")  # the link itself, not what it points to
    assert store.read_bytes("agent/victim/ckpt/a.pkl") == b"v1"


def test_a_client_directory_that_is_itself_a_symlink_is_refused(store: ArtifactStore) -> None:
    store.write_bytes("agent/victim/a.txt", b"v")
    (store.root / "learner").mkdir()
    os.symlink(store.root / "agent" / "victim", store.root / "learner" / "main")
    with pytest.raises(ValueError, match="outside its client's directory"):
        store.read_bytes("learner/main/a.txt")
    with pytest.raises(ValueError, match="outside its client's directory"):
        store.remove("learner/main/a.txt")


def test_a_duplicated_tree_leaves_out_links_into_another_client(store: ArtifactStore) -> None:
    store.write_bytes("agent/victim/secret.txt", b"s")
    store.write_bytes("learner/main/d/own.txt", b"o")
    os.symlink(store.root / "agent/victim/secret.txt", store.root / "learner/main/d/leak.txt")
    store.duplicate("learner/main/d", "learner/main/e")
    assert [i.path for i in store.list("learner/main/e")] == ["learner/main/e/own.txt"]


def test_glob_visits_each_entry_once_so_repeated_double_stars_stay_fast(
    store: ArtifactStore,
) -> None:
    deep = "/".join(f"d{i}" for i in range(100))
    store.write_bytes(f"g/n/{deep}/f.txt", b"x")
    began = time.monotonic()
    assert store.glob("**/**/**/f.txt", wd="g/n") == [f"{deep}/f.txt"]
    assert time.monotonic() - began < 1.0


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*", ["a.txt", "ckpt", "sub"]),
    ("**", ["a.txt", "ckpt", "ckpt/1.pkl", "ckpt/2.pkl", "sub", "sub/deep",
            "sub/deep/x.pkl"]),
    ("**/*.pkl", ["ckpt/1.pkl", "ckpt/2.pkl", "sub/deep/x.pkl"]),
    ("ckpt/*", ["ckpt/1.pkl", "ckpt/2.pkl"]),
    ("*/*.pkl", ["ckpt/1.pkl", "ckpt/2.pkl"]),
    ("ckpt/[12].pkl", ["ckpt/1.pkl", "ckpt/2.pkl"]),
    ("sub/**", ["sub", "sub/deep", "sub/deep/x.pkl"]),
    (".hidden/*", [".hidden/h.txt"]),
    ("**/*.txt", ["a.txt"]),
    ("a.txt", ["a.txt"]),
    ("missing/*", []),
])
def test_glob_answers_as_the_standard_library_glob(
    store: ArtifactStore, pattern: str, expected: list[str]
) -> None:
    import glob as stdlib_glob

    for rel in ("a.txt", "ckpt/1.pkl", "ckpt/2.pkl", "sub/deep/x.pkl", ".hidden/h.txt"):
        store.write_bytes(f"g/n/{rel}", b"")
    base = store.root / "g" / "n"
    std = sorted({m.rstrip("/") for m in stdlib_glob.glob(pattern, root_dir=base,
                                                            recursive=True)})
    assert store.glob(pattern, wd="g/n") == std == expected


def test_glob_past_its_bound_of_entries_or_seconds_raises_a_clear_error(
    store: ArtifactStore,
) -> None:
    for i in range(50):
        store.write_bytes(f"g/n/d{i}/f.txt", b"")
    with pytest.raises(ValueError, match="visited more than 20 entries"):
        store.glob("**/f.txt", wd="g/n", max_entries=20)
    with pytest.raises(ValueError, match="glob '\\*\\*/f.txt' ran longer than its bound of 0 s"):
        store.glob("**/f.txt", wd="g/n", timeout_s=0.0)
    assert len(store.glob("**/f.txt", wd="g/n", max_entries=200)) == 50
