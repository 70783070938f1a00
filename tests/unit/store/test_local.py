"""The local store without a registry: package, resolve, tags, removal, pins, gc, and
the write path's guarantees (verified before the rename, resumable, no wrong blob)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from modelrunner.errors import DigestMismatch, ModelInUse, ModelNotFound, StoreError, UsageError
from modelrunner.store import Store


def tiny_gguf(path: Path, fill: float = 1.0) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.context_length", 512)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor("w", np.full((256,), fill, dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_gguf(tmp_path / "tiny.gguf")


def test_package_then_resolve_without_network(store: Store, model: Path) -> None:
    files = store.package("localhost:5000/t/tiny:v1", gguf=model)
    assert store.has("localhost:5000/t/tiny:v1")
    assert store.resolve("localhost:5000/t/tiny:v1") == files
    assert files.path.read_bytes() == model.read_bytes()
    assert files.context_size == 512
    assert (store.blobs.path(files.digest or "").stat().st_mode & 0o222) == 0  # read-only
    [info] = store.list()
    assert info.tags == ("localhost:5000/t/tiny:v1",)
    assert (info.format, info.quantization, info.parameters) == ("gguf", "ALL_F32", "256.00")


def test_resolve_of_an_absent_model_names_it(store: Store) -> None:
    with pytest.raises(ModelNotFound, match=r"ai/nothing:latest: not in the local store"):
        store.resolve("nothing")
    assert not store.has("nothing")


def test_package_arguments_are_checked(store: Store, model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="exactly one of"):
        store.package("t/x:v1", gguf=model, dduf=model)
    with pytest.raises(UsageError, match="needs a tag"):
        store.package(f"t/x@sha256:{'a' * 64}", gguf=model)
    with pytest.raises(StoreError, match="no such GGUF file"):
        store.package("t/x:v1", gguf=tmp_path / "missing.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(StoreError, match="not a readable GGUF file"):
        store.package("t/x:v1", gguf=tmp_path / "bad.gguf")
    with pytest.raises(StoreError, match=r"missing tiny-00002-of-00002\.gguf"):
        store.package("t/x:v1", gguf=tiny_gguf(tmp_path / "tiny-00001-of-00002.gguf"))
    assert store.list() == []


def test_tags_share_blobs_and_removal_keeps_what_other_tags_use(store: Store, model: Path) -> None:
    first = store.package("t/tiny:v1", gguf=model)
    store.tag("t/tiny:v1", "t/tiny:stable")
    blobs = set(store.blobs.digests())
    store.remove("t/tiny:v1")
    assert set(store.blobs.digests()) == blobs  # still tagged t/tiny:stable
    assert store.resolve("t/tiny:stable") == first
    store.remove("t/tiny:stable")
    assert store.blobs.digests() == [] and store.list() == []
    assert not (store.root / "bundles" / (first.digest or "")[7:]).exists()


def test_remove_by_digest_drops_every_tag(store: Store, model: Path) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    store.tag("t/tiny:v1", "other/name:x")
    store.remove(f"t/tiny@{files.digest}")
    assert store.list() == []


def test_a_served_model_needs_force_to_be_removed(store: Store, model: Path) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    assert files.digest is not None
    store.pin(files.digest)
    with pytest.raises(ModelInUse, match=r"t/tiny:v1: model sha256:.* is served"):
        store.remove("t/tiny:v1")
    assert store.has("t/tiny:v1")
    store.remove("t/tiny:v1", force=True)
    assert not store.has("t/tiny:v1")


def test_a_pin_from_another_process_is_honoured_until_it_exits(store: Store, model: Path) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from modelrunner.store import Store
        server = Store(Path({str(store.root)!r}))  # held for the process's life, as mr serve does
        server.pin({files.digest!r})
        print("pinned", flush=True)
        time.sleep(60)
    """)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "pinned"
        other = Store(store.root)  # like `mr rm` in another process
        with pytest.raises(ModelInUse):
            other.remove("t/tiny:v1")
    finally:
        server.kill()
        server.wait()
    Store(store.root).remove("t/tiny:v1")  # its pin died with it
    assert store.list() == []


def test_gc_removes_unreferenced_blobs_and_partials(
    store: Store, model: Path, tmp_path: Path
) -> None:
    kept = store.package("t/tiny:v1", gguf=model)
    store.blobs.put_bytes(b"orphan")
    writer = store.blobs.writer(f"sha256:{'b' * 64}", 100, "test")
    writer.write(b"x" * 10)
    writer.close()
    usage = store.disk_usage()
    assert usage.reclaimable_bytes == len(b"orphan") and usage.partial_bytes == 10
    report = store.gc()
    assert (report.blobs_removed, report.partials_removed) == (1, 1)
    assert report.bytes_freed == len(b"orphan") + 10
    assert store.resolve("t/tiny:v1") == kept


def test_writer_refuses_bytes_that_do_not_match(store: Store) -> None:
    data = b"hello model"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    writer = store.blobs.writer(digest, len(data), "test")
    writer.write(b"hello MODEL")
    with pytest.raises(DigestMismatch, match="failed verification"):
        writer.commit()
    assert not store.blobs.has(digest) and store.blobs.partials() == []


def test_writer_refuses_more_bytes_than_announced(store: Store) -> None:
    digest = f"sha256:{hashlib.sha256(b'abc').hexdigest()}"
    writer = store.blobs.writer(digest, 3, "test")
    with pytest.raises(DigestMismatch, match="longer than the 3 bytes"):
        writer.write(b"abcd")
    assert not store.blobs.has(digest)


def test_an_interrupted_write_leaves_only_a_partial_that_resumes(store: Store) -> None:
    data = os.urandom(3 << 20)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    writer = store.blobs.writer(digest, len(data), "test")
    writer.write(data[:1_000_000])
    writer.close()  # the process "died" here
    assert not store.blobs.has(digest)
    resumed = store.blobs.writer(digest, len(data), "test")
    assert resumed.offset == 1_000_000
    resumed.write(data[1_000_000:])
    path = resumed.commit()
    assert path.read_bytes() == data and store.blobs.partials() == []


def test_a_full_disk_never_leaves_a_blob_under_its_final_name(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse writes past 200 kB, as a full disk would."""
    big = tiny_gguf(tmp_path / "big.gguf")
    with big.open("ab") as f:
        f.write(os.urandom(1 << 20))
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from modelrunner.errors import StoreError
        from modelrunner.store.blobs import BlobStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            BlobStore(Path({str(tmp_path / "store")!r})).ingest(Path({str(big)!r}))
        except StoreError as exc:
            print("error:", exc)
            sys.exit(0)
        sys.exit(1)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "error:" in done.stdout
    blobs = tmp_path / "store" / "blobs" / "sha256"
    assert not blobs.exists() or list(blobs.iterdir()) == []
    assert list((tmp_path / "store" / "incoming").iterdir()) == []


def test_bundle_is_rebuilt_when_its_blob_was_replaced(store: Store, model: Path) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    blob = store.blobs.path(f"sha256:{hashlib.sha256(model.read_bytes()).hexdigest()}")
    # What a re-fetch does: a new file (new inode) under the blob's name.
    replacement = blob.with_name("new")
    replacement.write_bytes(blob.read_bytes())
    os.replace(replacement, blob)
    again = store.resolve("t/tiny:v1")
    assert again.path.stat().st_ino == blob.stat().st_ino != 0
    assert files.path == again.path


def test_index_is_replaced_atomically(store: Store, model: Path) -> None:
    store.package("t/tiny:v1", gguf=model)
    before = store.index.path.stat().st_ino
    time.sleep(0.01)
    store.tag("t/tiny:v1", "t/tiny:v2")
    assert store.index.path.stat().st_ino != before  # a new file renamed over the old
    assert [p.name for p in store.root.glob(".index-*")] == []


def test_rm_force_of_a_served_model_keeps_its_files_until_the_pin_goes(
    store: Store, model: Path
) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    assert files.digest is not None
    store.pin(files.digest)
    store.remove("t/tiny:v1", force=True)
    assert not store.has("t/tiny:v1") and store.list() == []
    assert files.path.is_file(), "the engine's file went away under it"
    assert store.removed_while_served(files.digest)
    assert store.gc().blobs_removed == 0  # gc keeps what a server serves, too
    store.unpin(files.digest)
    assert not files.path.exists()
    assert store.blobs.digests() == []


def test_a_leftover_pin_of_a_reused_pid_is_ignored(store: Store, model: Path) -> None:
    """mr as PID 1 in a container: the last run's pin file names a pid that is alive again
    (here: pid 1), but no process holds its lock, so it pins nothing."""
    files = store.package("t/tiny:v1", gguf=model)
    pins = store.root / "pins"
    pins.mkdir()
    (pins / "1.json").write_text(json.dumps([files.digest]))
    (pins / "1-4242-abcdef.json").write_text(json.dumps([files.digest]))
    (pins / "1-4242-abcdef.lock").touch()
    store.remove("t/tiny:v1")  # no ModelInUse
    assert store.list() == []
    assert sorted(p.name for p in pins.iterdir()) == []


def test_release_leaves_no_pin_files(store: Store, model: Path) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    assert files.digest is not None
    store.pin(files.digest)
    assert [p.suffix for p in sorted((store.root / "pins").iterdir())] == [".json", ".lock"]
    store.release_pins()
    assert list((store.root / "pins").iterdir()) == []
    assert store.has("t/tiny:v1")  # still tagged: released pins delete nothing


def flip_a_byte(path: Path, at: int = 100, keep_mtime: bool = False) -> None:
    """Silent corruption: one byte changed in place, size kept (mtime too, if asked)."""
    before = path.stat()
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    path.chmod(0o444)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_verified_blobs_are_not_hashed_again_even_after_a_restart(
    store: Store, model: Path
) -> None:
    store.package("t/tiny:v1", gguf=model)
    assert store.check_intact("t/tiny:v1") == 1  # the GGUF layer: hashed once
    assert store.check_intact("t/tiny:v1") == 0
    assert Store(store.root).check_intact("t/tiny:v1") == 0  # a new server start: free
    assert Store(store.root).check_intact("t/tiny:v1", force=True) == 1


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_corrupted_blob_is_refused_with_a_located_error(
    store: Store, model: Path, keep_mtime: bool
) -> None:
    files = store.package("t/tiny:v1", gguf=model)
    store.files_to_load("t/tiny:v1", "never")  # verified and remembered
    blob = files.path.resolve()
    flip_a_byte(files.path, keep_mtime=keep_mtime)  # ctime still tells
    with pytest.raises(DigestMismatch) as info:
        store.files_to_load("t/tiny:v1", "never")
    message = str(info.value)
    assert message.startswith("t/tiny:v1: blob sha256:")
    assert "is corrupted" in message and str(store.blobs.dir) in message
    assert blob.exists()  # refused, not deleted: `mr pull` or `mr verify` tell the rest


def test_a_corrupted_blob_that_cannot_be_fetched_again_says_both(store: Store, model: Path) -> None:
    files = store.package("localhost:1/t/tiny:v1", gguf=model)
    flip_a_byte(files.path)
    with pytest.raises(DigestMismatch, match=r"is corrupted.*; fetching it again failed"):
        store.files_to_load("localhost:1/t/tiny:v1", "if-not-present")


def test_mr_verify_reports_corrupted_models_and_exits_1(
    store: Store, model: Path, tmp_path: Path
) -> None:
    good = store.package("t/good:v1", gguf=model)
    bad = store.package("t/bad:v1", gguf=tiny_gguf(tmp_path / "other.gguf", fill=2.0))
    assert good.digest != bad.digest
    store.check_intact("t/bad:v1")  # remembered as good: mr verify hashes anyway
    flip_a_byte(bad.path, keep_mtime=True)

    def mr_verify(*ref: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelrunner", "verify", "--store", str(store.root), *ref],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    everything = mr_verify()
    assert everything.returncode == 1
    assert "t/good:v1: ok" in everything.stdout
    assert "t/bad:v1: blob sha256:" in everything.stdout and "is corrupted" in everything.stdout
    assert mr_verify("t/good:v1").returncode == 0
    assert mr_verify("t/bad:v1").returncode == 1
