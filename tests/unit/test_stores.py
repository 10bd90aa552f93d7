"""FileStore on real volumes: round trips, crash leftovers, and a volume that is
read-only or full (real tmpfs mounts, not mocks)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detector.stores import MANIFEST_FORMAT, FileStore, Manifest, StoreError, parse_manifest
from tests.conftest import kill, wait_for


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs("size=64k")`` mounts a real tmpfs under ``tmp_path`` with those options;
    every mount is removed when the test ends. Mounting needs CAP_SYS_ADMIN: a
    container without it fails here, loudly."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"volume-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              check=False, capture_output=True, text=True)
        assert done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr}"
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=True)


def test_round_trip_of_several_keys_and_overwrites(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")            # created at the first write
    assert store.read(["0", "1"]) == {}
    assert store.write({"0": b"a" * 1000, "1": b"", "2": b"two"}) == 1003
    assert store.write({"0": b"newer"}) == 5
    assert FileStore(tmp_path / "state").read(["0", "1", "2", "3"]) == {
        "0": b"newer", "1": b"", "2": b"two"}
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["0", "1", "2"]


def test_read_removes_what_a_crash_left_and_keeps_the_old_blob(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.write({"4": b"complete"})
    (tmp_path / ".4.k3j2h1.tmp").write_bytes(b"half of a newer bl")   # killed mid-write
    assert store.read(["4"]) == {"4": b"complete"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_one_unreadable_key_does_not_block_the_others(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.write({"0": b"zero"})
    (tmp_path / "1").mkdir()                         # not a file: cannot be read
    found = store.read(["0", "1"])
    assert found["0"] == b"zero"
    assert isinstance(found["1"], StoreError) and found["1"].reason == "io"
    assert str(tmp_path / "1") in found["1"].detail


def test_read_only_volume_is_a_store_error_naming_the_path(tmpfs) -> None:
    volume = tmpfs("size=1m")
    FileStore(volume).write({"0": b"before"})
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    store = FileStore(volume)
    assert store.read(["0"]) == {"0": b"before"}     # reading still works
    with pytest.raises(StoreError) as err:
        store.write({"0": b"after"})
    assert err.value.reason == "read_only" and str(volume) in err.value.detail
    assert store.read(["0"]) == {"0": b"before"}
    with pytest.raises(StoreError) as err:          # a directory it would have to create
        FileStore(volume / "sub").write({"0": b"x"})
    assert err.value.reason == "read_only"


def test_full_volume_is_a_store_error_and_keeps_the_previous_blob(tmpfs) -> None:
    volume = tmpfs("size=64k")
    store = FileStore(volume)
    store.write({"0": b"old state"})
    with pytest.raises(StoreError) as err:
        store.write({"0": os.urandom(256 * 1024)})
    assert err.value.reason == "full" and str(volume) in err.value.detail
    assert store.read(["0"]) == {"0": b"old state"}
    assert not list(volume.glob(".*.tmp"))           # the half-written file is gone
    assert store.write({"0": b"fits again"}) == 10   # and the volume is usable


LIMITED = """
import sys
from pathlib import Path
from detector.stores import FileStore, StoreError
store = FileStore(Path(sys.argv[1]))
store.write({"0": b"small"})
try:
    store.write({"0": b"x" * 256 * 1024})
except StoreError as exc:
    print(exc.reason, exc.detail)
print(store.read(["0"]))
"""


def test_a_file_size_limit_is_reported_as_full(tmp_path: Path) -> None:
    """``ulimit -f`` (RLIMIT_FSIZE): EFBIG, in a process of its own. Needs no mount."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], check=False,
                          capture_output=True, text=True, preexec_fn=limit)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"full {tmp_path / '0'}: cannot write: File too large",
                                        "{'0': b'small'}"]


@pytest.mark.parametrize("key", ["", "a/b", "..", ".hidden", "x" * 201, "nul\0"])
def test_keys_that_are_not_plain_names_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="store key"):
        FileStore(tmp_path).write({key: b"x"})


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.from_regex(r"[0-9a-z_-]{1,12}", fullmatch=True),
                       st.binary(max_size=3000), max_size=6))
def test_any_blobs_round_trip(tmp_path_factory: pytest.TempPathFactory,
                              blobs: dict[str, bytes]) -> None:
    directory = tmp_path_factory.mktemp("any")
    FileStore(directory).write(blobs)
    assert FileStore(directory).read([*blobs, "never"]) == blobs


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4), max_leaves=12)
manifest_like = st.fixed_dictionaries(
    {"format": st.sampled_from([MANIFEST_FORMAT, "drift-detector-store/2"])},
    optional={name: json_values | st.integers(-2**64, 2**64)
              for name in ("generation", "parts", "bytes", "sha256")})


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 manifest_like.map(lambda v: json.dumps(v).encode())))
@example(b"[" * 4000)                                   # nests past the recursion limit
@example(b'{"a":' * 800)
@example(b"\xff\xfe")
@example(b"1" * 4090)                                   # an int of 4,090 digits
@example(b" " * 5000)
def test_parse_manifest_refuses_anything_but_a_manifest_with_a_reason(raw: bytes) -> None:
    try:
        m = parse_manifest(raw, 2**28)
    except StoreError as exc:
        assert exc.reason == "malformed" and exc.detail
    else:                                               # then it is one, and self-consistent
        assert isinstance(m, Manifest) and 0 <= m.size <= 2**28
        assert m.parts == -(-m.size // (512 * 1024))


WRITER = """
import sys
from pathlib import Path
from detector.stores import FileStore
store = FileStore(Path(sys.argv[1]))
store.write({"0": b"the complete checkpoint"})
print("written", flush=True)
store.write({"0": b"x" * 2**28})                  # killed while this is written
print("not killed", flush=True)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "written\n"
        wait_for(lambda: any(p.stat().st_size > 0 for p in tmp_path.glob(".0.*.tmp")), 30,
                 "the second write's temporary file to fill")
        child.kill()
        child.wait()
    finally:
        kill(child)
    assert list(tmp_path.glob(".0.*.tmp"))           # the crash left it
    assert FileStore(tmp_path).read(["0"]) == {"0": b"the complete checkpoint"}
    assert not list(tmp_path.glob(".0.*.tmp"))       # and the next start removed it
