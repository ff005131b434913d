"""Issue 14, item 5: a node transfers image files with its image store only
(``SDC_IMAGE_STORE_URL``). A forged ``image_create_from_machine`` must not send a tenant's
machine elsewhere, nor an ``image_ensure_present`` fetch from elsewhere: same scheme, host and
port, a path under the store's, no credentials, no dot segments or encoded separators, no
redirects; no setting, no transfer. Real HTTP servers on 127.0.0.1, real nodes.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents import tasks
from agents.backends import sim, transfer
from agents.backends.base import BackendError, NodeBackend
from agents.backends.linux import LinuxBackend
from agents.backends.linux.storage import BtrfsStorage
from agents.config import load_settings
from schemas.agent import MachineSpecSchema
from tests.support.agent_images import FileServer
from tests.support.btrfs import LoopPool, missing_host
from tests.unit.agents.conftest import IMAGE_TOKEN, hosting, store_url

STORE = "http://10.0.0.1:8080"


@pytest.mark.parametrize("url, store", [
    (f"{STORE}/images/0c5d/file?server=a&expires=1&signature=f0", STORE),
    (f"{STORE}/images/0c5d/file", STORE + "/"),
    ("http://10.0.0.1:8080/store/images/0c5d/file", "http://10.0.0.1:8080/store"),
    ("http://10.0.0.1/images/x", "http://10.0.0.1:80"),  # the scheme's default port
    ("https://head.example:443/images/x", "https://HEAD.example"),
])
def test_a_url_in_the_store_is_taken(url: str, store: str) -> None:
    assert transfer.check_url(url, store, "upload.url") == url


@pytest.mark.parametrize("url", [
    "http://10.0.0.2:8080/images/x/file",  # another host
    "http://10.0.0.1:8081/images/x/file",  # another port
    "http://10.0.0.1/images/x/file",  # the default port is another port
    "https://10.0.0.1:8080/images/x/file",  # another scheme
    "ftp://10.0.0.1:8080/images/x/file",
    "file:///etc/shadow",
    "//10.0.0.1:8080/images/x/file",
    "/images/x/file",
    "http://10.0.0.1:8080",  # no path
    "http://user@10.0.0.1:8080/images/x/file",  # credentials
    "http://user:pw@10.0.0.1:8080/images/x/file",
    "http://10.0.0.1:8080@evil.example/images/x/file",
    "http://10.0.0.1:8080/store/../admin",  # a dot segment, as written or encoded
    "http://10.0.0.1:8080/store/%2e%2e/admin",
    "http://10.0.0.1:8080/store/%2E%2e/admin",
    "http://10.0.0.1:8080/store/./x",
    "http://10.0.0.1:8080/store/a%2fb",  # an encoded separator
    "http://10.0.0.1:8080/store/a%2F..%2Fb",
    "http://10.0.0.1:8080/store/a%5cb",
    "http://10.0.0.1:8080/store/a\\b",
    "http://10.0.0.1:8080/store/a%00b",
    "http://10.0.0.1:8080/storefront/x",  # a path beside the store's, not under it
    "http://10.0.0.1:8080/store",
    "http://10.0.0.1:8080/other/x",
    "http://10.0.0.1:8080/store/x#frag",
    "http://10.0.0.1:8080/store/x y",
    "http://10.0.0.1:8080/store/x\n",
    "http://10.0.0.1:8080/store/\u00e9",
    "http://10.0.0.1:99999/store/x",  # no port at all
    "http://10.0.0.1:port/store/x",
])
def test_a_url_outside_the_store_is_refused(url: str) -> None:
    with pytest.raises(BackendError) as exc:
        transfer.check_url(url, "http://10.0.0.1:8080/store", "upload.url")
    assert exc.value.code == "TransferRefused"
    assert exc.value.message.startswith("upload.url ")


@pytest.mark.parametrize("store", ["", "10.0.0.1:8080", "ftp://10.0.0.1/", "http://u@10.0.0.1/"])
def test_no_usable_store_no_transfer(store: str) -> None:
    with pytest.raises(BackendError) as exc:
        transfer.check_url(f"{STORE}/images/x/file", store, "image.source.url")
    assert exc.value.code == "TransferRefused"
    assert "SDC_IMAGE_STORE_URL" in exc.value.message and "image.source.url" in exc.value.message


# -- through the task layer, on nodes made from the agent's settings -----------------------------


@pytest.fixture
def other_server() -> Iterator[FileServer]:
    """Another server on 127.0.0.1 (another port): not the node's image store."""
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def hosted_sim(tmp_path: Path) -> Iterator[NodeBackend]:
    """A sim node made from the agent's settings (the environment), served by the registry."""
    node = sim.from_settings(load_settings(data_dir=tmp_path, sim_state=False),
                             str(uuid.uuid4()))
    with hosting(node):
        yield node


def create_image_params(node: NodeBackend, url: str) -> dict[str, Any]:
    node.image_ensure_present({"uuid": str(uuid.uuid4()), "name": "base"})
    machine = str(uuid.uuid4())
    image = node.status()["images"][0]
    node.machine_create(MachineSpecSchema().load({
        "uuid": machine, "alias": "web0", "owner_uuid": str(uuid.uuid4()), "image_uuid": image,
        "ram_mb": 64, "disk_mb": 64}))
    return {"uuid": machine, "image": {"uuid": str(uuid.uuid4()), "name": "golden"},
            "upload": {"url": url, "headers": dict(IMAGE_TOKEN)}}


def test_the_setting_names_the_store_of_an_agents_nodes(
        tmp_path: Path, image_server: FileServer, other_server: FileServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDC_IMAGE_STORE_URL", store_url(image_server))
    with hosted_sim(tmp_path) as node:
        name = f"images/{uuid.uuid4()}/file"
        refused = tasks.run_op("image_create_from_machine", node.server_uuid,
                               create_image_params(node, other_server.url(name)))
        assert not refused["ok"] and refused["error"]["code"] == "TransferRefused"
        assert "upload.url" in refused["error"]["message"]
        assert other_server.requests == []
        taken = tasks.run_op("image_create_from_machine", node.server_uuid,
                             create_image_params(node, image_server.url(name)))
        assert taken["ok"], taken
        assert image_server.uploads[name]


@pytest.mark.parametrize("headers", [{"X-A": "1\r\nHost: evil.example"}, {"X A": "1"},
                                     {"X-A\n": "1"}])
def test_transfer_headers_cannot_add_headers(
        tmp_path: Path, image_server: FileServer, monkeypatch: pytest.MonkeyPatch,
        headers: dict[str, str]) -> None:
    monkeypatch.setenv("SDC_IMAGE_STORE_URL", store_url(image_server))
    with hosted_sim(tmp_path) as node:
        params = create_image_params(node, image_server.url(f"images/{uuid.uuid4()}/file"))
        params["upload"]["headers"] = headers
        outcome = tasks.run_op("image_create_from_machine", node.server_uuid, params)
    assert outcome["error"]["code"] == "InvalidParams" and "headers" in outcome["error"]["message"]


def test_an_agent_without_the_setting_transfers_nothing(
        tmp_path: Path, image_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDC_IMAGE_STORE_URL", raising=False)
    with hosted_sim(tmp_path) as node:
        name = f"images/{uuid.uuid4()}/file"
        outcome = tasks.run_op("image_create_from_machine", node.server_uuid,
                               create_image_params(node, image_server.url(name)))
        assert outcome["error"]["code"] == "TransferRefused"
        assert "SDC_IMAGE_STORE_URL is not set" in outcome["error"]["message"]
        assert name not in image_server.uploads


# -- the linux node: nothing fetched, made or sent -------------------------------------------------

linux_only = pytest.mark.skipif(missing_host() is not None, reason=str(missing_host()))


@linux_only
def test_a_linux_node_fetches_no_image_from_elsewhere(
        linux_backend: LinuxBackend, busybox_image: dict[str, Any], image_server: FileServer,
        other_server: FileServer) -> None:
    other_server.files["busybox.tar.gz"] = image_server.files["busybox.tar.gz"]
    image = {**busybox_image, "source": {"url": other_server.url("busybox.tar.gz"),
                                         "headers": {}}}
    with pytest.raises(BackendError) as exc:
        linux_backend.image_ensure_present(image)
    assert exc.value.code == "TransferRefused" and "image.source.url" in exc.value.message
    assert other_server.requests == []
    assert image["uuid"] not in linux_backend.storage.image_ids()
    assert not list(linux_backend.tmp_dir.iterdir())
    assert not list(linux_backend.images.manifests_dir.glob(f"*{image['uuid']}*"))
    # the same image from the store is taken
    assert linux_backend.image_ensure_present(busybox_image)["uuid"] == busybox_image["uuid"]


@linux_only
def test_a_linux_node_sends_no_machine_elsewhere(
        node: LinuxBackend, busybox_image: dict[str, Any], machine_spec: Any,
        other_server: FileServer) -> None:
    machine = node.machine_create(machine_spec(image_uuid=busybox_image["uuid"]))["uuid"]
    upload = {"url": other_server.url("images/x/file"), "headers": {}}
    with pytest.raises(BackendError) as exc:
        node.image_create_from_machine(machine, {"uuid": str(uuid.uuid4()), "name": "x"},
                                       upload)
    assert exc.value.code == "TransferRefused" and "upload.url" in exc.value.message
    assert other_server.requests == [] and other_server.uploads == {}
    assert node.snapshot_list(machine) == []  # not even the temporary snapshot
    assert not list(node.tmp_dir.iterdir())


@linux_only
def test_a_linux_node_without_a_store_fetches_nothing(
        btrfs_pool: LoopPool, busybox_image: dict[str, Any], image_server: FileServer) -> None:
    node = LinuxBackend(str(uuid.uuid4()), "no-store", BtrfsStorage(btrfs_pool.mount),
                        runc_root=btrfs_pool.runc_root)
    requests = len(image_server.requests)
    with pytest.raises(BackendError) as exc:
        node.image_ensure_present(busybox_image)
    assert exc.value.code == "TransferRefused"
    assert "SDC_IMAGE_STORE_URL" in exc.value.message
    assert len(image_server.requests) == requests
    assert busybox_image["uuid"] not in node.storage.image_ids()


class Redirector:
    """The store's address, answering every request with a redirect to ``target``."""

    def __init__(self, target: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_redirect_out_of_the_store_is_not_followed(
        tmp_path: Path, image_server: FileServer, other_server: FileServer) -> None:
    data = image_server.files["busybox.tar.gz"]
    other_server.files["busybox.tar.gz"] = data
    store = Redirector(other_server.url("busybox.tar.gz"))
    try:
        image = {"uuid": str(uuid.uuid4()), "files": [{"sha256": "0", "size": len(data)}],
                 "source": {"url": f"{store.url}/busybox.tar.gz", "headers": {}}}
        with pytest.raises(BackendError) as exc:
            transfer.ImageStoreLink(store.url).download(image, tmp_path / "file")
        assert exc.value.code == "ImageDownloadFailed" and "redirect" in exc.value.message
        (tmp_path / "up").write_bytes(b"machine")
        with pytest.raises(BackendError) as exc:
            transfer.ImageStoreLink(store.url).upload(tmp_path / "up",
                                                      {"url": f"{store.url}/images/x/file"})
        assert exc.value.code == "ImageUploadFailed"
    finally:
        store.close()
    assert other_server.requests == []
    assert not (tmp_path / "file").exists()


# -- an HTTPS store with a certificate of its own CA (what `sdc up` makes) ---------------------


def make_ca_and_certificate(where: Path) -> tuple[Path, Path, Path]:
    """(CA file, certificate, key) of a new CA and a certificate it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test image store CA", ca_key, "test image store CA", ca_key, ca=True)
    cert = build("127.0.0.1", key, "test image store CA", ca_key, ca=False)
    paths = where / "ca.pem", where / "cert.pem", where / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class HttpsStore:
    """An image store on https://127.0.0.1 that keeps what is PUT to it."""

    def __init__(self, cert: Path, key: Path) -> None:
        received: list[bytes] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_https_store_is_trusted_through_its_ca(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file, cert, key = make_ca_and_certificate(tmp_path)
    store = HttpsStore(cert, key)
    try:
        monkeypatch.setenv("SDC_IMAGE_STORE_URL", store.url)
        monkeypatch.delenv("SDC_IMAGE_STORE_CA", raising=False)
        with hosted_sim(tmp_path / "system-cas") as node:
            params = create_image_params(node, f"{store.url}/images/x/file")
            outcome = tasks.run_op("image_create_from_machine", node.server_uuid, params)
        assert outcome["error"]["code"] == "ImageUploadFailed"
        assert "CERTIFICATE_VERIFY_FAILED" in outcome["error"]["message"]
        assert store.received == []
        monkeypatch.setenv("SDC_IMAGE_STORE_CA", str(ca_file))
        with hosted_sim(tmp_path / "its-ca") as node:
            params = create_image_params(node, f"{store.url}/images/x/file")
            outcome = tasks.run_op("image_create_from_machine", node.server_uuid, params)
        assert outcome["ok"], outcome
        assert len(store.received) == 1
    finally:
        store.close()
    with pytest.raises(BackendError) as exc:
        transfer.ImageStoreLink(store.url, str(tmp_path / "missing.pem")).upload(
            ca_file, {"url": f"{store.url}/images/x/file"})
    assert exc.value.code == "TransferRefused" and "SDC_IMAGE_STORE_CA" in exc.value.message
