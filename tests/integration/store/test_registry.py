"""The store against a real registry: round trips, sharing, resume, corruption, failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from modelrunner.errors import (
    DigestMismatch,
    ModelNotFound,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnavailable,
    StoreError,
)
from modelrunner.store import CountingProgress, Store
from tests.fixtures.credhelper import helper_config, install_helper
from tests.fixtures.registry import (
    PASSWORD,
    USER,
    ChallengeRecorder,
    CuttingProxy,
    Registry,
    TokenService,
    basic_auth_registry,
    docker_config,
    free_port,
    own_addresses,
)

pytestmark = pytest.mark.registry
FAST = (0.05, 0.05, 0.05)  # retry waits: tests need not sleep like a real flaky link


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path) -> dict[str, int]:
    """What a store holds (files and sizes), to show a failure changed nothing."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and p.suffix != ".lock"
    }


@pytest.fixture(scope="module")
def published(
    registry: Registry, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """SmolLM2 packaged and pushed once for the module: ``<registry>/ai/smollm2:q4``."""
    store = Store(tmp_path_factory.mktemp("publisher"))
    ref = f"{registry.address}/ai/smollm2:q4"
    store.package(ref, gguf=smollm2_gguf)
    store.push(ref)
    return ref


def test_gguf_round_trip(published: str, smollm2_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    counted = CountingProgress()
    files = store.pull(published, counted)
    assert files.format == "gguf"
    assert files.path.name == smollm2_gguf.name
    assert sha256(files.path) == sha256(smollm2_gguf)
    assert files.context_size == 8192
    assert counted.bytes > smollm2_gguf.stat().st_size  # the GGUF and its config
    # The bundle file is the blob itself (a hard link), not a second copy.
    blob = store.blobs.path(f"sha256:{sha256(smollm2_gguf)}")
    assert files.path.stat().st_ino == blob.stat().st_ino
    assert store.resolve(published) == files
    info = store.inspect(published)
    assert (
        info["manifest"]["config"]["mediaType"]
        == "application/vnd.docker.ai.model.config.v0.1+json"
    )
    assert info["manifest"]["layers"][0]["mediaType"] == "application/vnd.docker.ai.gguf.v3"
    config = info["config"]
    assert config["config"]["architecture"] == "llama"
    assert config["config"]["quantization"] == "Q4_1"
    assert config["config"]["gguf"]["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in config["config"]["gguf"]
    assert config["rootfs"] == {
        "type": "rootfs",
        "diff_ids": [info["manifest"]["layers"][0]["digest"]],
    }
    assert config["descriptor"]["created"]


def test_second_tag_sharing_the_blob_downloads_nothing(
    published: str, registry: Registry, tmp_path: Path
) -> None:
    publisher = Store(tmp_path / "pub")
    publisher.pull(published)
    other = f"{registry.address}/team/smollm2-copy:v1"
    publisher.tag(published, other)
    publisher.push(other)

    store = Store(tmp_path / "store")
    store.pull(published)
    counted = CountingProgress()
    files = store.pull(other, counted)
    assert counted.bytes == 0
    assert files.digest == store.resolve(published).digest
    assert len(store.blobs.digests()) == 3  # config, GGUF, manifest: stored once


def _write_gguf(path: Path, shard: int) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.context_length", 256)
    writer.add_tensor(f"t{shard}", __import__("numpy").full((64,), shard, dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_sharded_gguf_keeps_shard_names_side_by_side(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shards = [src / f"tiny-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for i, shard in enumerate(shards, 1):
        _write_gguf(shard, i)
    ref = f"{registry.address}/test/sharded:v1"
    publisher = Store(tmp_path / "pub")
    publisher.package(ref, gguf=shards[0], context_size=128)
    publisher.push(ref)

    files = Store(tmp_path / "store").pull(ref)
    assert files.path.name == "tiny-00001-of-00003.gguf"
    assert sorted(p.name for p in files.path.parent.glob("*.gguf")) == [s.name for s in shards]
    for shard in shards:
        assert sha256(files.path.parent / shard.name) == sha256(shard)
    assert files.context_size == 128


def _safetensors(path: Path, values: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}})
    raw = header.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4 * values))


def test_safetensors_folder_round_trip(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "folder"
    (src / "text_encoder").mkdir(parents=True)
    (src / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (src / "tokenizer.json").write_text('{"model": {}}')
    (src / "LICENSE").write_text("Apache-2.0")
    (src / ".hidden").write_text("not packaged")
    _safetensors(src / "model-00001-of-00002.safetensors", 1000)
    _safetensors(src / "model-00002-of-00002.safetensors", 24)
    _safetensors(src / "text_encoder" / "model.safetensors", 8)
    ref = f"{registry.address}/test/folder:v1"
    publisher = Store(tmp_path / "pub")
    publisher.package(ref, safetensors_dir=src)
    publisher.push(ref)

    store = Store(tmp_path / "store")
    files = store.pull(ref)
    assert files.format == "safetensors" and files.path.is_dir()
    expected = sorted(
        p.relative_to(src).as_posix()
        for p in src.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    got = sorted(p.relative_to(files.path).as_posix() for p in files.path.rglob("*") if p.is_file())
    assert got == expected
    for rel in expected:
        assert (files.path / rel).read_bytes() == (src / rel).read_bytes()
    manifest = store.inspect(ref)["manifest"]
    assert manifest["config"]["mediaType"] == "application/vnd.docker.ai.model.config.v0.2+json"
    paths = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert paths["text_encoder/model.safetensors"] == "application/vnd.docker.ai.safetensors"
    assert paths["LICENSE"] == "application/vnd.docker.ai.license"
    assert paths["config.json"] == "application/vnd.docker.ai.model.file"
    config = store.inspect(ref)["config"]["config"]
    assert config["parameters"] == "1.03K" and config["architecture"] == "LlamaForCausalLM"


def test_dduf_round_trip_with_license_and_template(registry: Registry, tmp_path: Path) -> None:
    dduf = tmp_path / "tiny.dduf"
    with zipfile.ZipFile(dduf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("model_index.json", '{"_class_name": "StableDiffusionPipeline"}')
        z.writestr("unet/config.json", "{}")
    (tmp_path / "LICENSE.txt").write_text("MIT")
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    ref = f"{registry.address}/test/dduf:v1"
    publisher = Store(tmp_path / "pub")
    publisher.package(
        ref,
        dduf=dduf,
        licenses=[tmp_path / "LICENSE.txt"],
        chat_template=tmp_path / "chat.jinja",
        context_size=77,
    )
    publisher.push(ref)

    files = Store(tmp_path / "store").pull(ref)
    assert files.format == "dduf" and files.path.name == "tiny.dduf"
    assert files.path.read_bytes() == dduf.read_bytes()
    assert files.chat_template is not None and files.chat_template.read_text() == "{{ messages }}"
    assert (files.path.parent / "LICENSE.txt").read_text() == "MIT"
    assert files.context_size == 77


def _cut_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", backoff=FAST)


def test_pull_cut_mid_blob_resumes_with_range(
    published: str,
    registry: Registry,
    cutting_proxy: CuttingProxy,
    tmp_path: Path,
    smollm2_gguf: Path,
) -> None:
    cutting_proxy.cut_after, cutting_proxy.cuts = 30_000_000, 1
    ref = published.replace(registry.address, cutting_proxy.address)
    counted = CountingProgress()
    files = _cut_store(tmp_path).pull(ref, counted)
    assert sha256(files.path) == sha256(smollm2_gguf)
    assert any(
        r.startswith("Range: bytes=") and not r.endswith("=0-") for r in cutting_proxy.ranges()
    ), cutting_proxy.ranges()
    # The resumed request fetched only the rest: nothing was downloaded twice.
    size = smollm2_gguf.stat().st_size
    assert size < counted.bytes < size + 10_000


def test_pull_broken_off_by_a_dead_registry_resumes_on_the_next_pull(
    published: str,
    registry: Registry,
    cutting_proxy: CuttingProxy,
    tmp_path: Path,
    smollm2_gguf: Path,
) -> None:
    cutting_proxy.cut_after, cutting_proxy.cuts, cutting_proxy.stop_on_cut = 40_000_000, 1, True
    ref = published.replace(registry.address, cutting_proxy.address)
    store = _cut_store(tmp_path)
    with pytest.raises(RegistryUnavailable, match="pull again to resume") as failure:
        store.pull(ref)
    assert cutting_proxy.address in str(failure.value)
    gguf_digest = f"sha256:{sha256(smollm2_gguf)}"
    partial = store.blobs.incoming / f"{gguf_digest[7:]}.partial"
    kept = partial.stat().st_size
    assert 0 < kept <= 40_000_000
    assert not store.blobs.has(gguf_digest) and not store.has(ref)

    cutting_proxy.start()  # the registry is back
    counted = CountingProgress()
    files = store.pull(ref, counted)
    assert sha256(files.path) == sha256(smollm2_gguf)
    assert counted.bytes == smollm2_gguf.stat().st_size - kept
    assert f"Range: bytes={kept}-" in cutting_proxy.ranges()
    assert not partial.exists()


def test_corrupted_blob_on_disk_is_detected_and_fetched_again(
    published: str, tmp_path: Path, smollm2_gguf: Path
) -> None:
    store = Store(tmp_path / "store")
    store.pull(published)
    blob = store.blobs.path(f"sha256:{sha256(smollm2_gguf)}")
    blob.chmod(0o644)
    with blob.open("r+b") as f:  # flip bytes in the middle, size unchanged (bit rot)
        f.seek(50_000_000)
        f.write(b"\xff" * 16)
    counted = CountingProgress()
    again = store.pull(published, counted)
    assert any("corrupted" in note for note in counted.notes)
    assert counted.bytes >= smollm2_gguf.stat().st_size
    assert sha256(again.path) == sha256(smollm2_gguf)
    assert store.blobs.verify(f"sha256:{sha256(smollm2_gguf)}")


@pytest.fixture
def failing_pull(tmp_path: Path) -> Callable[..., pytest.ExceptionInfo[Exception]]:
    """Pull into a store that already holds a model, and show the failure changed nothing."""

    def run(
        ref: str, error: type[Exception], match: str, **store_args: object
    ) -> pytest.ExceptionInfo[Exception]:
        store = Store(tmp_path / "store", backoff=FAST, **store_args)  # type: ignore[arg-type]
        before = snapshot(store.root)
        with pytest.raises(error, match=match) as info:
            store.pull(ref)
        assert snapshot(store.root) == before
        return info

    return run


def test_registry_down_is_a_clear_error(failing_pull: Callable[..., object]) -> None:
    port = free_port()  # nothing listens there
    failing_pull(
        f"127.0.0.1:{port}/ai/smollm2:q4",
        RegistryUnavailable,
        f"registry 127.0.0.1:{port}: cannot connect",
    )


def test_unknown_tag_is_not_found(published: str, failing_pull: Callable[..., object]) -> None:
    ref = published.replace(":q4", ":no-such-tag")
    failing_pull(ref, ModelNotFound, "no-such-tag: not found in registry")


def test_missing_credentials_are_refused(
    basic_registry: Registry, failing_pull: Callable[..., object]
) -> None:
    failing_pull(
        f"{basic_registry.address}/ai/smollm2:q4",
        RegistryUnauthorized,
        rf"registry {basic_registry.address} refused access to ai/smollm2 \(HTTP 401",
    )


def test_wrong_password_is_refused(
    basic_registry: Registry, failing_pull: Callable[..., object], tmp_path: Path
) -> None:
    env = docker_config(tmp_path / "docker", basic_registry.address, password="wrong")
    failing_pull(
        f"{basic_registry.address}/ai/smollm2:q4", RegistryUnauthorized, "HTTP 401", environ=env
    )


def test_basic_auth_registry_round_trip(
    basic_registry: Registry, smollm2_gguf: Path, tmp_path: Path
) -> None:
    env = docker_config(tmp_path / "docker", basic_registry.address)
    ref = f"{basic_registry.address}/ai/smollm2:q4"
    Store(tmp_path / "pub", environ=env).package(ref, gguf=smollm2_gguf)
    Store(tmp_path / "pub", environ=env).push(ref)
    files = Store(tmp_path / "store", environ=env).pull(ref)
    assert sha256(files.path) == sha256(smollm2_gguf)


def test_bearer_token_registry_round_trip(
    token_registry: tuple[Registry, TokenService], smollm2_gguf: Path, tmp_path: Path
) -> None:
    registry, tokens = token_registry
    env = docker_config(tmp_path / "docker", registry.address)
    ref = f"{registry.address}/team/smollm2:q4"
    publisher = Store(tmp_path / "pub", environ=env)
    publisher.package(ref, gguf=smollm2_gguf)
    issued = tokens.issued
    publisher.push(ref)
    files = Store(tmp_path / "store", environ=env).pull(ref)
    assert sha256(files.path) == sha256(smollm2_gguf)
    assert tokens.issued > issued  # it really went through the token service

    anonymous = Store(tmp_path / "anon")
    with pytest.raises(RegistryUnauthorized, match=r"token service .* refused anonymous access"):
        anonymous.pull(ref)
    env_creds = {
        "MR_REGISTRY_USER": USER,
        "MR_REGISTRY_PASSWORD": PASSWORD,
        "DOCKER_CONFIG": str(tmp_path / "empty"),
    }
    assert Store(tmp_path / "env", environ=env_creds).pull(ref).digest == files.digest


def test_blob_with_the_wrong_digest_is_refused(
    registry: Registry,
    smollm2_gguf: Path,
    tmp_path: Path,
    failing_pull: Callable[..., pytest.ExceptionInfo[Exception]],
) -> None:
    ref = f"{registry.address}/test/tampered:v1"
    publisher = Store(tmp_path / "pub")
    publisher.package(ref, dduf=_tiny_zip(tmp_path / "m.dduf"))
    publisher.push(ref)
    layer = publisher.inspect(ref)["manifest"]["layers"][0]["digest"]
    data = registry.blob_data(layer)
    data.write_bytes(bytes(len(data.read_bytes())))  # same size, other bytes
    info = failing_pull(ref, DigestMismatch, f"blob {layer} failed verification")
    assert "nothing was stored" in str(info.value)


def _tiny_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model_index.json", '{"_class_name": "X"}' + " " * 4096)
    return path


def test_unknown_config_media_type_is_refused(
    registry: Registry, failing_pull: Callable[..., object]
) -> None:
    base = f"http://{registry.address}/v2/test/not-a-model"
    config = b'{"architecture": "amd64"}'
    digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    upload = httpx.post(f"{base}/blobs/uploads/")
    location = upload.headers["Location"]
    url = location if location.startswith("http") else f"http://{registry.address}{location}"
    # The upload URL carries the registry's state in its query: append, do not replace.
    sep = "&" if "?" in url else "?"
    httpx.put(f"{url}{sep}digest={digest}", content=config).raise_for_status()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": len(config),
            }
        ],
    }
    httpx.put(
        f"{base}/manifests/v1",
        content=json.dumps(manifest),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    ).raise_for_status()
    failing_pull(
        f"{registry.address}/test/not-a-model:v1",
        StoreError,
        "unsupported config media type 'application/vnd.oci.image.config.v1\\+json'",
    )


def test_concurrent_pulls_of_one_reference_share_one_download(
    published: str, tmp_path: Path, smollm2_gguf: Path
) -> None:
    store = Store(tmp_path / "store")
    counted = CountingProgress()
    results = []
    barrier = threading.Barrier(4)

    def pull() -> None:
        barrier.wait()
        results.append(store.pull(published, counted))

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len({r.path for r in results}) == 1
    size = smollm2_gguf.stat().st_size
    assert size < counted.bytes < size + 10_000


def test_async_pulls_share_one_download(published: str, tmp_path: Path, smollm2_gguf: Path) -> None:
    store = Store(tmp_path / "store")
    counted = CountingProgress()

    async def both() -> list[object]:
        return await asyncio.gather(*(store.pull_async(published, counted) for _ in range(3)))

    results = asyncio.run(both())
    assert len({r.digest for r in results}) == 1  # type: ignore[attr-defined]
    assert counted.bytes < smollm2_gguf.stat().st_size + 10_000


def test_two_stores_on_one_folder_share_one_download(
    published: str, tmp_path: Path, smollm2_gguf: Path
) -> None:
    """Two Store objects (as two processes would) serialise on the blob's file lock."""
    counted = CountingProgress()
    stores = [Store(tmp_path / "store"), Store(tmp_path / "store")]
    threads = [threading.Thread(target=s.pull, args=(published, counted)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted.bytes < smollm2_gguf.stat().st_size + 10_000
    assert stores[0].has(published)


# -- plain HTTP only on loopback or when listed --------------------------------------------
@pytest.fixture
def own_address(monkeypatch: pytest.MonkeyPatch) -> str:
    """A non-loopback address of this machine (never any other machine's): requests to it
    stay here. No proxy may take them elsewhere."""
    found = own_addresses()
    if not found:
        pytest.skip("this machine has no address but loopback: the table test stands alone")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", found[0])
    return found[0]


def test_credentials_never_go_over_plain_http_off_loopback(
    own_address: str, tmp_path: Path
) -> None:
    listener = ChallengeRecorder(own_address)
    try:
        env = docker_config(tmp_path / "docker", listener.address)
        store = Store(tmp_path / "store", environ=env, backoff=FAST)
        with pytest.raises(RegistryUnavailable):
            store.pull(f"{listener.address}/team/model:1")
        sent = listener.received
        assert sent.startswith(b"\x16\x03"), sent[:40]  # a TLS handshake, not a request
        secret = base64.b64encode(f"{USER}:{PASSWORD}".encode())
        assert secret not in sent and PASSWORD.encode() not in sent and b"GET /v2" not in sent

        # Listed in MR_INSECURE_REGISTRIES: plain HTTP, credentials after the challenge.
        listener.received = b""
        listed = Store(tmp_path / "store", (listener.address,), environ=env, backoff=FAST)
        with pytest.raises(RegistryError):
            listed.pull(f"{listener.address}/team/model:1")
        assert b"GET /v2/team/model/manifests/1" in listener.received
        assert b"Authorization: Basic " + secret in listener.received
    finally:
        listener.close()


def test_a_registry_off_loopback_is_spoken_to_over_plain_http_only_when_listed(
    own_address: str, smollm2_gguf: Path, tmp_path: Path
) -> None:
    registry = basic_auth_registry(tmp_path / "registry", own_address)
    try:
        env = docker_config(tmp_path / "docker", registry.address)
        ref = f"{registry.address}/ai/smollm2:q4"
        publisher = Store(tmp_path / "pub", (own_address,), environ=env)  # a host listed
        publisher.package(ref, gguf=smollm2_gguf)
        publisher.push(ref)
        with pytest.raises(RegistryUnavailable, match="cannot connect"):
            Store(tmp_path / "plain", environ=env, backoff=FAST).pull(ref)
        files = Store(tmp_path / "listed", (registry.address,), environ=env).pull(ref)
        assert sha256(files.path) == sha256(smollm2_gguf)
    finally:
        registry.stop()


# -- Docker credential helpers, for real --------------------------------------------------
def test_pull_with_credentials_from_a_credential_helper(
    basic_registry: Registry, smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{basic_registry.address}/helper/smollm2:q4"
    publisher = Store(
        tmp_path / "pub", environ=docker_config(tmp_path / "d", basic_registry.address)
    )
    publisher.package(ref, gguf=smollm2_gguf)
    publisher.push(ref)
    bin_ = tmp_path / "bin"
    asked = install_helper(bin_, "vault", {basic_registry.address: (USER, PASSWORD)}, monkeypatch)
    install_helper(bin_, "stale", {basic_registry.address: (USER, "old-password")}, monkeypatch)

    store_env = helper_config(tmp_path / "a", credsStore="vault")
    files = Store(tmp_path / "a-store", environ=store_env).pull(ref)
    assert sha256(files.path) == sha256(smollm2_gguf)
    assert basic_registry.address in asked.read_text().splitlines()

    # credHelpers names the helper for this registry, over credsStore: a stale one is refused.
    stale_env = helper_config(tmp_path / "b", credsStore="vault",
                              credHelpers={basic_registry.address: "stale"})  # fmt: skip
    with pytest.raises(RegistryUnauthorized):
        Store(tmp_path / "b-store", environ=stale_env).pull(ref)
    helped_env = helper_config(tmp_path / "c", credsStore="stale",
                               credHelpers={basic_registry.address: "vault"})  # fmt: skip
    assert Store(tmp_path / "c-store", environ=helped_env).pull(ref).digest == files.digest
