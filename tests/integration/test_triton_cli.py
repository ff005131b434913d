"""Triton's own CLI (npm ``triton`` 7.x) against a live head node with sim agents: the proof
that CloudAPI clients work unchanged. Each command's output is what is asserted on.

The CLI runs with a fresh RSA key in a temporary HOME, no ssh-agent (``SSH_AUTH_SOCK``
unset) and a profile from environment variables. Then signature failures through the real
server (gunicorn): unknown key, tampered signature, a date 6 minutes off, a replay, missing
headers -> 401.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from headnode.config import get_settings
from headnode.services import keys, networks
from headnode.services.context import ServiceContext
from tests.support.httpsig_client import Signer, http_date
from tests.support.triton import home_with_key, triton_runner


@pytest.fixture(scope="module")
def services(cloud: Any) -> ServiceContext:
    """The cloud's own database, for what an operator sets up outside CloudAPI."""
    settings = get_settings(database_url=cloud.env["SDC_DATABASE_URL"],
                            redis_url=cloud.env["SDC_REDIS_URL"],
                            data_dir=Path(cloud.env["SDC_DATA_DIR"]))
    return ServiceContext(settings)


@pytest.fixture(scope="module")
def tenant(cloud: Any, services: ServiceContext,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """alice (made by the operator, with a first key), a public network, and a HOME whose
    ~/.ssh holds her RSA key."""
    seeded = cloud.seed()
    networks.create_network(services, {"name": "external", "subnet": "10.99.0.0/24",
                                       "gateway": "10.99.0.1"})
    signer = Signer("alice")
    keys.create_key(services, seeded["account"]["uuid"], "first", signer.public_line)
    home = home_with_key(tmp_path_factory.mktemp("home"), signer)
    return {"home": home, "signer": signer, "seeded": seeded}


@pytest.fixture(scope="module")
def cloudapi_url(cloud: Any) -> str:
    return f"http://{cloud.env['SDC_API_BIND']}"


@pytest.fixture(scope="module")
def triton(triton_bin: str, tenant: dict[str, Any], cloudapi_url: str) -> Any:
    return triton_runner(triton_bin, tenant["home"], "alice", tenant["signer"].fingerprint,
                         cloudapi_url)


@pytest.fixture(scope="module")
def operator_triton(triton_bin: str, cloud: Any, services: ServiceContext, cloudapi_url: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An operator's CLI (``--act-as`` works for operators only)."""
    account = cloud.api.post("/ops/accounts", {"login": "operator1", "operator": True,
                                               "email": "ops@example.com"})
    signer = Signer("operator1")
    keys.create_key(services, account["uuid"], "ops", signer.public_line)
    home = home_with_key(tmp_path_factory.mktemp("ops-home"), signer)
    return triton_runner(triton_bin, home, "operator1", signer.fingerprint, cloudapi_url)


@pytest.fixture(scope="module")
def instance(triton: Any) -> Iterator[dict[str, Any]]:
    """``triton create -w``: one running instance for the tests that act on it."""
    out = triton("create", "-w", "-n", "web1", "-t", "role=web", "base-64", "small")
    assert "Creating instance web1" in out
    assert "base-64@24.4.1" in out and "small" in out
    assert "Created instance web1" in out
    got = json.loads(triton("inst", "get", "-j", "web1"))
    yield got


def test_account_get(triton: Any) -> None:
    out = triton("account", "get")
    assert "login: alice" in out
    assert "email: alice@example.com" in out


def test_key_add_and_list(triton: Any, tenant: dict[str, Any], tmp_path: Path) -> None:
    second = Signer("alice", kind="ed25519")
    pub = tmp_path / "laptop.pub"
    pub.write_text(second.public_line + "\n")
    out = triton("key", "add", "-n", "laptop", str(pub))
    assert f'Added key "laptop" ({second.fingerprint})' in out
    listed = triton("key", "list")
    assert "laptop" in listed and second.fingerprint in listed
    assert "first" in listed and tenant["signer"].fingerprint in listed


def test_package_image_network_lists(triton: Any) -> None:
    packages = triton("package", "list")
    assert "small" in packages and "large" in packages
    assert "1G" in packages  # small's memory, as the CLI formats it
    images = triton("image", "list")
    assert "base-64" in images and "24.4.1" in images and "smartos" in images
    nets = triton("network", "list")
    assert "external" in nets and "true" in nets  # public


def test_create_list_get(triton: Any, instance: dict[str, Any]) -> None:
    assert instance["name"] == "web1"
    assert instance["state"] == "running"
    assert instance["package"] == "small"
    assert instance["primaryIp"].startswith("10.99.0.")
    assert instance["tags"] == {"role": "web"}
    listed = triton("inst", "list")
    line = next(row for row in listed.splitlines() if "web1" in row)
    assert "running" in line and instance["id"][:8] in line and "base-64" in line
    human = triton("inst", "get", "web1")
    assert instance["id"] in human and '"state": "running"' in human


def test_stop_start_reboot_wait(triton: Any, instance: dict[str, Any]) -> None:
    assert "Stop instance web1" in triton("inst", "stop", "-w", "web1")
    assert json.loads(triton("inst", "get", "-j", "web1"))["state"] == "stopped"
    assert "Start instance web1" in triton("inst", "start", "-w", "web1")
    assert json.loads(triton("inst", "get", "-j", "web1"))["state"] == "running"
    out = triton("inst", "reboot", "-w", "web1")
    assert "Rebooted instance web1" in out
    audit = triton("inst", "audit", "-j", "web1")
    actions = [json.loads(line)["action"] for line in audit.splitlines() if line.strip()]
    assert actions[:4] == ["reboot", "start", "stop", "provision"]


def test_tags(triton: Any, instance: dict[str, Any]) -> None:
    # a tag change is a job on the node; -w polls the tags until they show it
    out = triton("inst", "tag", "set", "-w", "web1", "env=prod", "tier=2")
    assert json.loads(out) == {"role": "web", "env": "prod", "tier": 2}
    assert json.loads(triton("inst", "tag", "list", "web1"))["env"] == "prod"
    out = triton("inst", "tag", "delete", "-w", "web1", "env")
    assert "Deleted tag env on instance web1" in out
    assert "env" not in json.loads(triton("inst", "tag", "list", "web1"))


def listed_metadata(triton: Any, signer: Signer) -> dict[str, Any]:
    """The instance's metadata but the keys its create gave it (alice's, oldest first)."""
    listed = json.loads(triton("inst", "metadata", "list", "web1"))
    assert listed.pop("root_authorized_keys").startswith(f"{signer.public_line}\n")
    return dict(listed)


def test_metadata(triton: Any, instance: dict[str, Any], tenant: dict[str, Any]) -> None:
    # -w waits for the action's audit entry newer than the CLI's clock after the answer:
    # the entry is the end of the job that changed the node, so both commands end
    out = triton("inst", "metadata", "set", "-w", "web1", "motd=hello")
    assert json.loads(out)["motd"] == "hello"
    assert triton("inst", "metadata", "get", "web1", "motd").strip() == "hello"
    assert listed_metadata(triton, tenant["signer"]) == {"motd": "hello"}
    out = triton("inst", "metadata", "delete", "-w", "-f", "web1", "motd")  # -f: no tty
    assert f'Deleted metadata motd of instance "{instance["id"]}"' in out
    assert listed_metadata(triton, tenant["signer"]) == {}
    audit = [json.loads(line)["action"] for line in
             triton("inst", "audit", "-j", "web1").splitlines() if line.strip()]
    assert audit[:2] == ["remove_metadata", "set_metadata"]


def test_snapshots(triton: Any, instance: dict[str, Any]) -> None:
    out = triton("inst", "snapshot", "create", "-w", "-n", "snap1", "web1")
    assert "Creating snapshot snap1 of instance web1" in out
    assert 'Created snapshot "snap1"' in out
    listed = triton("inst", "snapshot", "list", "web1")
    line = next(row for row in listed.splitlines() if "snap1" in row)
    assert "created" in line


def test_start_from_a_snapshot_ends_running(triton: Any, instance: dict[str, Any]) -> None:
    triton("inst", "stop", "-w", "web1")
    # -w polls until the instance is running: it must end so
    out = triton("inst", "start", "-w", "--snapshot=snap1", "web1")
    assert "Start instance web1" in out
    assert json.loads(triton("inst", "get", "-j", "web1"))["state"] == "running"
    audit = [json.loads(line)["action"] for line in
             triton("inst", "audit", "-j", "web1").splitlines() if line.strip()]
    assert audit[:2] == ["rollback_snapshot", "stop"]
    # -w waits for the delete_snapshot audit entry newer than the answer's Date
    out = triton("inst", "snapshot", "delete", "-w", "-f", "web1", "snap1")
    assert 'Deleted snapshot "snap1"' in out
    assert "snap1" not in triton("inst", "snapshot", "list", "web1")


def test_operator_acts_as_alice_and_is_recorded(operator_triton: Any, triton: Any,
                                                instance: dict[str, Any]) -> None:
    listed = operator_triton("--act-as", "alice", "inst", "list")
    assert "web1" in listed
    out = operator_triton("--act-as", "alice", "inst", "tag", "set", "-w", "web1", "by=ops")
    assert json.loads(out)["by"] == "ops"
    operator_triton("--act-as", "alice", "inst", "stop", "-w", "web1")
    audit = [json.loads(line) for line in triton("inst", "audit", "-j", "web1").splitlines()
             if line.strip()]
    assert audit[0]["action"] == "stop"
    assert audit[0]["caller"]["operator"] == "operator1"
    assert audit[0]["caller"]["account"] == "alice"
    assert audit[0]["caller"]["keyId"].startswith("/operator1/keys/")
    # a plain tenant may not act as another account
    refused = triton("--act-as", "operator1", "inst", "list", ok=False)
    assert "NotAuthorized" in refused or "permission" in refused
    triton("inst", "start", "-w", "web1")


@pytest.fixture(scope="module")
def backnet(services: ServiceContext) -> str:
    """A second public network (on a VLAN of the nic tag the sim nodes provide)."""
    return networks.create_network(services, {"name": "backnet", "subnet": "10.98.0.0/24",
                                              "vlan_id": 98}).uuid


def nics_of(triton: Any, inst: str) -> list[dict[str, Any]]:
    out = triton("inst", "nic", "list", "-j", inst)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_nics(triton: Any, instance: dict[str, Any], backnet: str) -> None:
    # create -w polls GetNic until the NIC is running (the add_nic job has plugged it)
    created = triton("inst", "nic", "create", "-w", "web1", "backnet")
    mac = created.split("Created NIC ")[1].split()[0]
    assert f"Creating NIC {mac}" in created
    got = json.loads(triton("inst", "nic", "get", "web1", mac))
    assert (got["state"], got["network"], got["primary"]) == ("running", backnet, False)
    assert got["ip"].startswith("10.98.0.") and got["netmask"] == "255.255.255.0"
    table = triton("inst", "nic", "list", "web1")
    line = next(row for row in table.splitlines() if mac in row)
    assert f"{got['ip']}/24" in line and "running" in line and backnet[:8] in line
    assert [n["primary"] for n in nics_of(triton, "web1")] == [True, False]
    again = triton("inst", "nic", "create", "web1", backnet, ok=False)
    assert "already has a NIC on that network" in again  # CloudAPI's 302
    refused = triton("inst", "nic", "get", "web1", "nonsense", ok=False)
    assert "InvalidArgument" in refused and "mac" in refused
    assert f"Deleted NIC {mac}" in triton("inst", "nic", "delete", "-f", "web1", mac)
    deadline = time.monotonic() + 60
    while len(nics_of(triton, "web1")) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [n["ip"] for n in nics_of(triton, "web1")] == [instance["primaryIp"]]

    # the NICOPT form: a network object with the address asked for
    chosen = triton("inst", "nic", "create", "-w", "web1", f"ipv4_uuid={backnet}",
                    "ipv4_ips=10.98.0.50")
    assert "Created NIC" in chosen
    assert [n["ip"] for n in nics_of(triton, "web1")] == [instance["primaryIp"], "10.98.0.50"]


def test_rename_then_delete(triton: Any, instance: dict[str, Any]) -> None:
    out = triton("inst", "rename", "-w", "web1", "web2")
    assert 'Renamed instance web1 to "web2"' in out
    assert json.loads(triton("inst", "get", "-j", "web2"))["id"] == instance["id"]
    out = triton("delete", "-w", "-f", "web2")  # -f: no tty to confirm on
    assert "Delete instance web2" in out
    assert "web2" not in triton("inst", "list")
    gone = triton("inst", "get", instance["id"], ok=False)
    assert "deleted" in gone


# --------------------------------------------------------------------------- signatures


def _get(url: str, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(url + path, headers=headers, timeout=10)


def test_signatures_through_the_real_server(tenant: dict[str, Any], cloudapi_url: str,
                                            cloud: Any) -> None:
    signer: Signer = tenant["signer"]
    good = signer.headers("get", "/my")
    answer = _get(cloudapi_url, "/my", {**good, "Accept-Version": "~9||~8"})
    assert answer.status_code == 200
    assert answer.headers["Api-Version"] == "9.0.0"
    # (no Server check here: gunicorn drops the app's Server header and sends its own)
    assert answer.headers["x-request-id"]

    unknown = Signer("alice")
    answer = _get(cloudapi_url, "/my", unknown.headers("get", "/my"))
    assert (answer.status_code, answer.json()["code"]) == (401, "InvalidCredentials")

    tampered = signer.headers("get", "/my")
    tampered["Authorization"] = signer.headers(
        "get", "/my/keys", date=tampered["Date"])["Authorization"]
    answer = _get(cloudapi_url, "/my", tampered)
    assert (answer.status_code, answer.json()["code"]) == (401, "InvalidSignature")

    skewed = signer.headers("get", "/my", date=http_date(time.time() - 360))
    answer = _get(cloudapi_url, "/my", skewed)
    assert answer.status_code == 401
    assert answer.json()["code"] == "InvalidHeader"

    for missing in ("Date", "Authorization"):
        headers = signer.headers("get", "/my")
        del headers[missing]
        assert _get(cloudapi_url, "/my", headers).status_code == 401

    # a captured change, replayed later (here 3 s later, well inside the Date window)
    captured = signer.headers("post", "/my")
    body = {"email": "captured@example.com"}
    first = requests.post(cloudapi_url + "/my", headers=captured, json=body, timeout=10)
    assert first.status_code == 200
    requests.post(cloudapi_url + "/my", headers=signer.headers("post", "/my"),
                  json={"email": "alice@example.com"}, timeout=10)
    time.sleep(3)
    replay = requests.post(cloudapi_url + "/my", headers=captured, json=body, timeout=10)
    assert replay.status_code == 401
    now = _get(cloudapi_url, "/my", signer.headers("get", "/my")).json()
    assert now["email"] == "alice@example.com"
    # a captured read, replayed later, is refused too
    time.sleep(0.1)
    assert _get(cloudapi_url, "/my", good).status_code == 401
