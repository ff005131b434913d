"""TLS without a server: the certificate `sdc up` makes, what `sdc headnode serve` accepts
as its transport, and what the client refuses before it connects (issue 14, item 3)."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import click
import pytest
from cryptography import x509

from headnode.cli.client import OpsClient, PlainHttpRefused, check_transport, is_loopback
from headnode.cli.context import default_api_url
from headnode.cli.headnode import check_transport as serve_transport
from headnode.cli.tls import RENEW_BEFORE, VALIDITY, local_tls
from headnode.config import get_settings
from headnode.imagestore import base_url
from schemas.settings import SettingsError

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def test_the_made_certificate_is_for_loopback_and_signed_by_its_ca(tmp_path: Path) -> None:
    tls, made = local_tls(tmp_path / "tls", NOW)
    assert made
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # a server can load it, and a client trusting the CA file only accepts it
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert_file,
                                                                         tls.key_file)
    ssl.create_default_context(cafile=str(tls.ca_file))


def test_the_certificate_is_kept_until_it_nears_its_end(tmp_path: Path) -> None:
    first, _ = local_tls(tmp_path, NOW)
    pem = first.cert_file.read_bytes()
    assert local_tls(tmp_path, NOW + datetime.timedelta(days=30)) == (first, False)
    assert first.cert_file.read_bytes() == pem
    _, made = local_tls(tmp_path, NOW + VALIDITY - RENEW_BEFORE + datetime.timedelta(hours=1))
    assert made and first.cert_file.read_bytes() != pem


def test_a_damaged_file_is_made_again(tmp_path: Path) -> None:
    tls, _ = local_tls(tmp_path, NOW)
    tls.key_file.write_text("not a key")
    assert local_tls(tmp_path, NOW)[1]
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert_file,
                                                                         tls.key_file)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("LOCALHOST", True), ("10.0.0.2", False), ("0.0.0.0", False),
    ("headnode.example", False), ("", False), ("localhost.example", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("url", ["http://10.0.0.2:8080", "http://headnode.example/",
                                 "HTTP://10.0.0.2"])
def test_the_token_never_goes_in_clear_text_to_another_host(url: str) -> None:
    with pytest.raises(PlainHttpRefused, match="SDC_ALLOW_PLAIN_HTTP"):
        OpsClient(url, "secret-token")
    check_transport(url, "secret-token", allow_plain_http=True)  # the operator said so
    check_transport(url, None, allow_plain_http=False)  # no token, nothing to give away


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080",
                                 "http://[::1]:8080", "https://10.0.0.2:8443"])
def test_loopback_and_https_may_carry_the_token(url: str) -> None:
    check_transport(url, "secret-token", allow_plain_http=False)


@pytest.mark.parametrize("bind", ["0.0.0.0:8080", "10.0.0.2:8080", "[::]:8080", ":8080",
                                  "0.0.0.0", "::", "[2001:db8::1]:8080", "hn.example:8080"])
def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path, bind: str) -> None:
    settings = get_settings(data_dir=tmp_path)
    with pytest.raises(click.ClickException, match="refusing to serve plain HTTP"):
        serve_transport(bind, settings)
    allowed = get_settings(data_dir=tmp_path, allow_plain_http=True)
    assert serve_transport(bind, allowed) == {}


@pytest.mark.parametrize("bind", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080",
                                  "127.0.0.1", "::1", "unix:/run/sdc/api.sock"])
def test_serve_may_serve_plain_http_on_loopback(tmp_path: Path, bind: str) -> None:
    assert serve_transport(bind, get_settings(data_dir=tmp_path)) == {}


def test_serve_with_tls_checks_the_files_first(tmp_path: Path) -> None:
    tls, _ = local_tls(tmp_path / "tls")
    good = get_settings(data_dir=tmp_path, tls_cert=str(tls.cert_file),
                        tls_key=str(tls.key_file))
    assert serve_transport("0.0.0.0:8443", good) == {"certfile": str(tls.cert_file),
                                                     "keyfile": str(tls.key_file)}
    swapped = get_settings(data_dir=tmp_path, tls_cert=str(tls.key_file),
                           tls_key=str(tls.cert_file))
    with pytest.raises(click.ClickException, match="cannot serve HTTPS with SDC_TLS_CERT"):
        serve_transport("0.0.0.0:8443", swapped)


@pytest.mark.parametrize("given", [{"tls_cert": "/etc/sdc/cert.pem"},
                                   {"tls_key": "/etc/sdc/key.pem"}])
def test_a_certificate_needs_its_key(tmp_path: Path, given: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SDC_TLS_CERT and SDC_TLS_KEY"):
        get_settings(data_dir=tmp_path, **given)


def test_with_tls_the_default_urls_are_https(tmp_path: Path) -> None:
    tls, _ = local_tls(tmp_path / "tls")
    settings = get_settings(data_dir=tmp_path, api_bind="0.0.0.0:8443",
                            tls_cert=str(tls.cert_file), tls_key=str(tls.key_file))
    assert default_api_url(settings) == "https://127.0.0.1:8443"  # the sdc client's
    assert base_url(settings) == "https://127.0.0.1:8443"  # where nodes fetch image files
    plain = get_settings(data_dir=tmp_path, api_bind="127.0.0.1:8080")
    assert default_api_url(plain) == base_url(plain) == "http://127.0.0.1:8080"
