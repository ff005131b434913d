"""The API over HTTPS (issue 14, item 3): `sdc headnode serve` with a certificate made as
`sdc up` makes its own, the `sdc` client trusting it through SDC_CA_FILE (and refusing it
without), Triton's own CLI with `-i` (--insecure, what `curl -k` is) or trusting the CA
file; and the refusals of plain HTTP beyond loopback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from headnode.cli.client import ApiUntrusted, OpsClient
from headnode.cli.tls import local_tls
from headnode.config import get_settings
from headnode.imagebuild import DEFAULT_BUSYBOX
from headnode.services import accounts, keys
from headnode.services.context import ServiceContext
from tests.support.api_server import SDC, TOKEN, ServedApi, serve_api
from tests.support.httpsig_client import Signer
from tests.support.net import free_port, port_open
from tests.support.triton import home_with_key, triton_runner


@pytest.fixture
def https_api(procs: Any, postgres_server: Any, redis_server: Any, tmp_path: Path) -> ServedApi:
    tls, made = local_tls(tmp_path / "tls")
    assert made
    return serve_api(procs, postgres_server, redis_server, tmp_path,
                     env={"SDC_TLS_CERT": str(tls.cert_file), "SDC_TLS_KEY": str(tls.key_file)},
                     ca_file=str(tls.ca_file))


def sdc(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SDC_")}
    return subprocess.run([SDC, *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_sdc_client_talks_https_trusting_the_ca_file(https_api: ServedApi) -> None:
    assert https_api.url.startswith("https://")
    assert https_api.client().get("/ops/servers") == []
    done = sdc("--json", "server", "list", SDC_API_URL=https_api.url, SDC_OPERATOR_TOKEN=TOKEN,
               SDC_CA_FILE=str(https_api.ca_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not DEFAULT_BUSYBOX.is_file(), reason="busybox-static is not installed")
def test_an_image_file_is_uploaded_over_https(https_api: ServedApi, tmp_path: Path) -> None:
    # the upload streams through the client's session, not its JSON calls: same trust
    trust = {"SDC_API_URL": https_api.url, "SDC_OPERATOR_TOKEN": TOKEN,
             "SDC_CA_FILE": str(https_api.ca_file)}
    built = json.loads(sdc("--json", "image", "build-busybox", "--out", str(tmp_path),
                           **trust).stdout)
    done = sdc("--json", "image", "import", built["manifest"], built["file"], **trust)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "active"


def test_an_untrusted_certificate_is_refused_in_one_line(https_api: ServedApi) -> None:
    with pytest.raises(ApiUntrusted, match="not trusted"):
        OpsClient(https_api.url, TOKEN, timeout=5).get("/ops/servers")
    done = sdc("server", "list", SDC_API_URL=https_api.url, SDC_OPERATOR_TOKEN=TOKEN)
    assert done.returncode == 1
    assert "TLS certificate is not trusted" in done.stderr and "SDC_CA_FILE" in done.stderr
    assert "Traceback" not in done.stderr


def test_plain_http_to_the_https_port_gets_nothing(https_api: ServedApi) -> None:
    plain = OpsClient(https_api.url.replace("https://", "http://"), TOKEN, timeout=5)
    assert not plain.ping()


def test_triton_cli_with_insecure_over_https(https_api: ServedApi, triton_bin: str,
                                      tmp_path: Path) -> None:
    settings = get_settings(database_url=https_api.env["SDC_DATABASE_URL"],
                            redis_url=https_api.env["SDC_REDIS_URL"],
                            data_dir=Path(https_api.env["SDC_DATA_DIR"]))
    ctx = ServiceContext(settings)
    account = accounts.create_account(ctx, "alice", "alice@example.com")
    signer = Signer("alice")
    keys.create_key(ctx, str(account.uuid), "first", signer.public_line)
    (tmp_path / "home").mkdir()
    home = home_with_key(tmp_path / "home", signer)

    insecure = triton_runner(triton_bin, home, "alice", signer.fingerprint, https_api.url)
    out = insecure("-i", "account", "get")
    assert "login: alice" in out
    # without -i (--insecure) the CLI checks the certificate, which no public CA signed ...
    refused = insecure("account", "get", ok=False)
    assert "login: alice" not in refused
    # ... and trusts it once Node is given the CA file
    trusting = triton_runner(triton_bin, home, "alice", signer.fingerprint, https_api.url,
                             extra_env={"NODE_EXTRA_CA_CERTS": str(https_api.ca_file)})
    assert "login: alice" in trusting("account", "get")


def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: were the check missing, the
    # bind would fail rather than listen anywhere.
    port = free_port()
    done = sdc("headnode", "serve", "--bind", f"192.0.2.1:{port}",
               SDC_DATA_DIR=str(tmp_path), SDC_OPERATOR_TOKEN=TOKEN)
    assert done.returncode == 1
    assert "refusing to serve plain HTTP on 192.0.2.1" in done.stderr
    assert "SDC_TLS_CERT" in done.stderr and "SDC_ALLOW_PLAIN_HTTP" in done.stderr
    assert not port_open(port)


def test_the_client_refuses_the_token_over_plain_http_to_another_host() -> None:
    # refused before any connection is tried: nothing is sent to 192.0.2.1
    done = sdc("server", "list", SDC_API_URL="http://192.0.2.1:8080", SDC_OPERATOR_TOKEN=TOKEN)
    assert done.returncode == 1
    assert "refusing to send the operator token over plain HTTP to http://192.0.2.1" \
        in done.stderr
    assert "SDC_ALLOW_PLAIN_HTTP" in done.stderr and TOKEN not in done.stderr
