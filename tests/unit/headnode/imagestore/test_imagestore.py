"""The image store on a real directory: verified writes and signed URLs."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from headnode.config import get_settings
from headnode.imagestore import (
    URL_LIFETIME,
    FileMismatch,
    ImageStore,
    TransferRejected,
    base_url,
)

IMAGE = "7b0c3f0e-2f6a-4d7e-9a4b-0c6a1d2e3f40"
SERVER = "5a4e1f7c-9d0b-4b8e-8c3a-2b1d0e9f8a76"
DATA = b"a root filesystem, compressed" * 1000


def store_in(tmp_path: Path, **overrides: str) -> ImageStore:
    return ImageStore(get_settings(data_dir=tmp_path, operator_token="t", **overrides))


def chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def expect(data: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def leftovers(store: ImageStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []


def test_a_matching_file_is_kept(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    stored = store.receive(IMAGE, chunks(DATA), expect(DATA))
    assert (stored.sha256, stored.size) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert store.path(IMAGE) == tmp_path / "images" / IMAGE
    assert store.path(IMAGE).read_bytes() == DATA
    assert leftovers(store) == [IMAGE]


@pytest.mark.parametrize(("wanted", "field"), [
    ({"sha256": "0" * 64, "size": len(DATA)}, "sha256"),
    ({"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA) + 1}, "size"),
    ({"sha256": hashlib.sha256(DATA).hexdigest(), "size": 10}, "size"),
])
def test_a_mismatch_keeps_nothing(tmp_path: Path, wanted: dict[str, object],
                                  field: str) -> None:
    store = store_in(tmp_path)
    with pytest.raises(FileMismatch) as err:
        store.receive(IMAGE, chunks(DATA), wanted)
    assert err.value.field == field
    assert leftovers(store) == []


def test_a_mismatch_does_not_replace_a_good_file(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.receive(IMAGE, chunks(DATA), expect(DATA))
    with pytest.raises(FileMismatch):
        store.receive(IMAGE, chunks(b"other bytes"), expect(DATA))
    assert store.path(IMAGE).read_bytes() == DATA
    assert leftovers(store) == [IMAGE]


def test_an_unchecked_upload_reports_what_arrived(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    stored = store.receive(IMAGE, iter(chunks(DATA)), None)
    assert stored.size == len(DATA) and stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert store.remove(IMAGE) and not store.has_file(IMAGE) and not store.remove(IMAGE)


def test_the_key_is_made_once_private(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    first = store.signature("GET", IMAGE, SERVER, 100)
    key_file = tmp_path / "image-url-key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    # another process (another API worker) reads the same key
    assert store_in(tmp_path).signature("GET", IMAGE, SERVER, 100) == first
    assert store_in(tmp_path / "elsewhere").signature("GET", IMAGE, SERVER, 100) != first


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_source_url_round_trip(tmp_path: Path) -> None:
    store = store_in(tmp_path, api_bind="127.0.0.1:9999")
    image = SimpleNamespace(uuid=IMAGE)
    source = store.source_for(SERVER, image)
    parts = urlsplit(source["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == \
        f"http://127.0.0.1:9999/images/{IMAGE}/file"
    q = query(source["url"])
    assert q["server"] == SERVER
    assert time.time() + URL_LIFETIME - 5 <= int(q["expires"]) <= time.time() + URL_LIFETIME
    assert store.verify("GET", IMAGE, q) == SERVER
    upload = store.upload_for(SERVER, image)
    assert upload["headers"]["Content-Type"] == "application/octet-stream"
    assert store.verify("PUT", IMAGE, query(upload["url"])) == SERVER


@pytest.mark.parametrize("tamper", [
    lambda q: {**q, "server": "11111111-2222-3333-4444-555555555555"},
    lambda q: {**q, "expires": str(int(q["expires"]) + 1)},
    lambda q: {**q, "signature": "0" * 64},
    lambda q: {k: v for k, v in q.items() if k != "signature"},
    lambda q: {**q, "expires": "soon"},
])
def test_a_tampered_url_is_refused(tmp_path: Path, tamper: object) -> None:
    store = store_in(tmp_path)
    q = query(store.source_for(SERVER, SimpleNamespace(uuid=IMAGE))["url"])
    with pytest.raises(TransferRejected):
        store.verify("GET", IMAGE, tamper(q))  # type: ignore[operator]


def test_a_url_is_for_one_method_and_image(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    q = query(store.source_for(SERVER, SimpleNamespace(uuid=IMAGE))["url"])
    with pytest.raises(TransferRejected):
        store.verify("PUT", IMAGE, q)
    with pytest.raises(TransferRejected):
        store.verify("GET", "8b0c3f0e-2f6a-4d7e-9a4b-0c6a1d2e3f40", q)


def test_an_expired_url_is_refused(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    url = store.signed_url("GET", IMAGE, SERVER, now=time.time() - URL_LIFETIME - 1)
    with pytest.raises(TransferRejected, match="expired"):
        store.verify("GET", IMAGE, query(url))


@pytest.mark.parametrize(("bind", "configured", "wanted"), [
    ("127.0.0.1:8080", "", "http://127.0.0.1:8080"),
    ("0.0.0.0:8080", "", "http://127.0.0.1:8080"),
    ("0.0.0.0:8080", "https://hn.example:8443/", "https://hn.example:8443"),
])
def test_base_url(tmp_path: Path, bind: str, configured: str, wanted: str) -> None:
    settings = get_settings(data_dir=tmp_path, api_bind=bind, image_base_url=configured)
    assert base_url(settings) == wanted
