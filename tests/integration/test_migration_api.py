"""Moving machines between sim nodes through every interface (issue 17): Triton's own CLI
(``triton inst migration begin|sync|switch|finalize|automatic|abort|list|get``, ``-w``
following CloudAPI's watch stream to its end event), the operator API and ``sdc vm migrate
... --to --watch``, ``sdc vm migration list|get``, and ``sdc server evacuate`` of a server
with three machines. And the refusals: a tenant while tenants may not migrate, a bad
action, an unknown machine, another account's, ``--to`` a server that cannot take it.

One cloud of three sim agents (a small simulated fill, so a sync takes well under a second).
Its API refuses tenants' migrations (the default); a second API process on the same
database and Redis, started with SDC_USER_MIGRATION_ALLOWED=true, is the one alice's
``triton`` uses to migrate.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from headnode.cli.client import ApiError
from headnode.config import get_settings
from headnode.services import keys, networks
from headnode.services.context import ServiceContext
from tests.integration.conftest import SDC, Cloud, sdc
from tests.support.httpsig_client import Signer
from tests.support.net import free_port
from tests.support.triton import home_with_key, triton_runner
from tests.support.wait import wait_until

#: a sim machine of the small package (10 GiB disk) sends 10 MiB in its first sync
CLOUD_ENV = {"SDC_SIM_MIGRATION_FILL": "0.001", "SDC_SIM_TRANSFER_MBPS": "500"}
MIGRATION_TIMEOUT = 90


@pytest.fixture(scope="module")
def services(cloud: Cloud) -> ServiceContext:
    settings = get_settings(database_url=cloud.env["SDC_DATABASE_URL"],
                            redis_url=cloud.env["SDC_REDIS_URL"],
                            data_dir=Path(cloud.env["SDC_DATA_DIR"]))
    return ServiceContext(settings)


@pytest.fixture(scope="module")
def allowed_api(cloud: Cloud) -> str:
    """A second API process that lets accounts migrate their machines."""
    port = free_port()
    env = {**cloud.env, "SDC_API_BIND": f"127.0.0.1:{port}",
           "SDC_USER_MIGRATION_ALLOWED": "true"}
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/--ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    cloud.procs.spawn("api-migrating", [SDC, "headnode", "serve"], env=env, ready=ready,
                      timeout=60)
    return url


@pytest.fixture(scope="module")
def world(cloud: Cloud, services: ServiceContext,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """alice with a key and a HOME for triton, bob with a key, a public network."""
    seeded = cloud.seed()
    bob = cloud.api.post("/ops/accounts", {"login": "bob", "email": "bob@example.com"})
    networks.create_network(services, {"name": "external", "subnet": "10.98.0.0/24",
                                       "gateway": "10.98.0.1"})
    signers = {"alice": Signer("alice"), "bob": Signer("bob")}
    keys.create_key(services, seeded["account"]["uuid"], "main", signers["alice"].public_line)
    keys.create_key(services, bob["uuid"], "main", signers["bob"].public_line)
    home = home_with_key(tmp_path_factory.mktemp("home"), signers["alice"])
    return {**seeded, "bob": bob, "signers": signers, "home": home}


@pytest.fixture(scope="module")
def triton(triton_bin: str, world: dict[str, Any], allowed_api: str) -> Any:
    """alice's triton against the API that lets her migrate."""
    return triton_runner(triton_bin, world["home"], "alice",
                         world["signers"]["alice"].fingerprint, allowed_api)


@pytest.fixture(scope="module")
def refusing_triton(triton_bin: str, world: dict[str, Any], cloud: Cloud) -> Any:
    """alice's triton against the API with the default setting (tenants may not)."""
    return triton_runner(triton_bin, world["home"], "alice",
                         world["signers"]["alice"].fingerprint, cloud.api.base_url)


@pytest.fixture(scope="module")
def operator_triton(triton_bin: str, cloud: Cloud, services: ServiceContext,
                    tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An operator's triton against the API that refuses tenants (operators always may)."""
    account = cloud.api.post("/ops/accounts", {"login": "operator1", "operator": True,
                                               "email": "ops@example.com"})
    signer = Signer("operator1")
    keys.create_key(services, account["uuid"], "ops", signer.public_line)
    home = home_with_key(tmp_path_factory.mktemp("ops-home"), signer)
    return triton_runner(triton_bin, home, "operator1", signer.fingerprint,
                         cloud.api.base_url)


def signed(url: str, signer: Signer, method: str, path: str,
           body: Any = None) -> requests.Response:
    return requests.request(method.upper(), url + path, json=body, timeout=30,
                            headers=signer.headers(method, path))


def provision(cloud: Cloud, alias: str, server_uuid: str | None = None,
              owner: str = "alice") -> dict[str, Any]:
    body = {"owner": owner, "package": "small", "image": "base-64", "alias": alias}
    if server_uuid:
        body["server_uuid"] = server_uuid
    machine = cloud.api.post("/ops/machines", body)
    assert cloud.wait_job(machine["job_uuid"])["execution"] == "succeeded"
    return dict(cloud.api.get(f"/ops/machines/{machine['uuid']}"))


def machine(cloud: Cloud, uuid: str) -> dict[str, Any]:
    return dict(cloud.api.get(f"/ops/machines/{uuid}"))


def migration(cloud: Cloud, uuid: str) -> dict[str, Any]:
    return dict(cloud.api.get(f"/ops/migrations/{uuid}"))


def room(cloud: Cloud) -> dict[str, tuple[int, int]]:
    """Each server's RAM in flight and committed."""
    return {s["uuid"]: (s.get("ram_inflight_mb") or 0, s.get("ram_committed_mb") or 0)
            for s in cloud.api.get("/ops/servers")}


def sdc_json(cloud: Cloud, *args: str) -> Any:
    done = sdc(cloud, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tenant_refusals(cloud: Cloud, world: dict[str, Any], refusing_triton: Any,
                         allowed_api: str) -> None:
    web = provision(cloud, "refused1")
    refused = refusing_triton("inst", "migration", "begin", "refused1", ok=False)
    assert "NotAuthorized" in refused and "user_migration_allowed" in refused
    alice, bob = world["signers"]["alice"], world["signers"]["bob"]
    base = f"/my/machines/{web['uuid']}/migrate"
    bad = signed(allowed_api, alice, "post", base, {"action": "teleport"})
    assert bad.status_code == 409 and bad.json()["code"] == "InvalidArgument"
    assert "action" in bad.json()["message"]
    missing = signed(allowed_api, alice, "post", base, {})
    assert missing.status_code == 409 and missing.json()["code"] == "MissingParameter"
    misplaced = signed(allowed_api, alice, "post", base,
                       {"action": "sync", "affinity": ["instance!=x"]})
    assert misplaced.status_code == 409 and "affinity" in misplaced.json()["message"]
    unknown = signed(allowed_api, alice, "post",
                     "/my/machines/00000000-0000-4000-8000-000000000000/migrate",
                     {"action": "begin"})
    assert unknown.status_code == 404
    others = signed(allowed_api, bob, "post", base, {"action": "begin"})
    assert others.status_code == 404
    assert signed(allowed_api, bob, "get", f"/my/migrations/{web['uuid']}").status_code == 404
    nothing = signed(allowed_api, alice, "post", base, {"action": "sync"})
    assert nothing.status_code == 409 and nothing.json()["code"] == "InvalidState"
    estimate = signed(allowed_api, alice, "get", base)
    assert estimate.status_code == 200 and estimate.json()["size"] == 10240 * 1024 * 1024
    # none of it left a migration behind, and the machine stayed where it was
    assert cloud.api.get("/ops/migrations", {"machine": web["uuid"]}) == []
    assert machine(cloud, web["uuid"])["server_uuid"] == web["server_uuid"]


def test_operator_migrates_as_the_account_and_affinity_places_the_target(
        cloud: Cloud, world: dict[str, Any], operator_triton: Any, allowed_api: str) -> None:
    servers = sorted(cloud.agents.values())
    anchor = provision(cloud, "anchor1", server_uuid=servers[2])
    follower = provision(cloud, "follower1", server_uuid=servers[0])
    out = operator_triton("--act-as", "alice", "inst", "migration", "begin", "-w",
                          "follower1")
    assert "Done - begin finished" in out
    out = operator_triton("--act-as", "alice", "inst", "migration", "abort", "-w",
                          "follower1")
    assert "Done - abort finished" in out
    assert migration(cloud, follower["uuid"])["state"] == "aborted"

    alice = world["signers"]["alice"]
    base = f"/my/machines/{follower['uuid']}/migrate"
    begun = signed(allowed_api, alice, "post", base,
                   {"action": "begin", "affinity": "instance==anchor1"})
    assert begun.status_code == 201, begun.text
    assert (begun.json()["machine"], begun.json()["phase"]) == (follower["uuid"], "begin")
    assert migration(cloud, follower["uuid"])["target_server_uuid"] == anchor["server_uuid"]
    watched = requests.post(allowed_api + base + "?action=watch", timeout=60, headers=alice
                            .headers("post", base + "?action=watch"))
    assert watched.headers["Content-Type"].startswith("application/x-json-stream")
    events = [json.loads(row) for row in watched.text.splitlines()]
    assert events[-1] == {"type": "end", "phase": "begin", "state": "paused"}
    assert {e["type"] for e in events[:-1]} == {"progress"}
    aborted = signed(allowed_api, alice, "post", base, {"action": "abort"})
    assert aborted.status_code == 201
    cloud.wait_job(migration(cloud, follower["uuid"])["job_uuid"])
    assert machine(cloud, follower["uuid"])["server_uuid"] == servers[0]


def test_triton_begin_sync_switch_finalize(cloud: Cloud, world: dict[str, Any],
                                           triton: Any) -> None:
    web = provision(cloud, "mover1")
    source = web["server_uuid"]
    out = triton("inst", "migration", "begin", "-w", "mover1")
    assert "Done - begin finished" in out
    got = json.loads(triton("inst", "migration", "get", "-j", "mover1"))
    assert (got["machine"], got["phase"], got["state"]) == (web["uuid"], "begin", "paused")
    target = migration(cloud, web["uuid"])["target_server_uuid"]
    assert target not in (None, source)

    out = triton("inst", "migration", "sync", "-w", "mover1")
    assert "Done - sync finished" in out
    synced = migration(cloud, web["uuid"])
    assert (synced["phase"], synced["state"], synced["syncs"]) == ("sync", "paused", 1)
    assert synced["sent_bytes"] >= 10 * 1024 * 1024
    assert machine(cloud, web["uuid"])["server_uuid"] == source  # still running there

    out = triton("inst", "migration", "switch", "-w", "mover1")
    assert "Done - switch finished" in out
    switched = migration(cloud, web["uuid"])
    assert (switched["phase"], switched["state"]) == ("switch", "successful")
    assert switched["downtime_ms"] is not None and switched["downtime_ms"] >= 0
    moved = machine(cloud, web["uuid"])
    assert (moved["server_uuid"], moved["state"]) == (target, "running")
    assert moved["ips"] == web["ips"] and moved["nics"][0]["mac"] == web["nics"][0]["mac"]
    inst = json.loads(triton("inst", "get", "-j", "mover1"))
    assert inst["compute_node"] == target

    assert "Done - the migration is finalized" in triton("inst", "migration", "finalize",
                                                         "mover1")
    human = triton("inst", "migration", "get", "mover1")
    assert "State:         successful" in human and "Total runtime:" in human
    assert "removed the original instance" in human
    listed = triton("inst", "migration", "list")
    line = next(row for row in listed.splitlines() if web["uuid"][:8] in row)
    assert "successful" in line


def test_triton_automatic_and_abort(cloud: Cloud, world: dict[str, Any], triton: Any) -> None:
    auto = provision(cloud, "auto1")
    out = triton("inst", "migration", "automatic", "-w", "auto1")
    assert "Done - switch finished" in out
    done = migration(cloud, auto["uuid"])
    assert (done["phase"], done["state"], done["automatic"]) == ("switch", "successful", True)
    assert machine(cloud, auto["uuid"])["server_uuid"] == done["target_server_uuid"]
    # finalized, so that no later test finds a switched machine it may not migrate again
    assert "Done - the migration is finalized" in triton("inst", "migration", "finalize",
                                                         "auto1")
    wait_until(lambda: not migration(cloud, auto["uuid"])["source_held"], timeout=30,
               message="auto1's source room given back by its finalize")

    kept = provision(cloud, "kept1")
    held_before = room(cloud)
    triton("inst", "migration", "begin", "-w", "kept1")
    target = migration(cloud, kept["uuid"])["target_server_uuid"]
    assert room(cloud)[target] != held_before[target]  # begin holds the machine's size
    triton("inst", "migration", "sync", "-w", "kept1")
    out = triton("inst", "migration", "abort", "-w", "kept1")
    assert "Done - abort finished" in out
    aborted = json.loads(triton("inst", "migration", "get", "-j", "kept1"))
    assert aborted["state"] == "aborted"
    after = machine(cloud, kept["uuid"])
    assert (after["server_uuid"], after["state"]) == (kept["server_uuid"], "running")
    assert room(cloud) == held_before  # the target's hold is given back
    again = triton("inst", "migration", "switch", "kept1", ok=False)
    assert "InvalidState" in again


def test_sdc_migrate_to_a_server(cloud: Cloud, world: dict[str, Any]) -> None:
    servers = sorted(cloud.agents.values())
    vm = provision(cloud, "ops1", server_uuid=servers[0])
    path = f"/ops/machines/{vm['uuid']}/migrate"

    same = sdc(cloud, "vm", "migrate", "begin", vm["uuid"], "--to", servers[0])
    assert same.returncode == 1 and "target_server" in same.stderr
    cloud.api.put(f"/ops/servers/{servers[1]}", {"reserved": True})
    try:
        full = sdc(cloud, "vm", "migrate", "begin", vm["uuid"], "--to", servers[1])
        assert full.returncode == 1 and "InsufficientCapacity" in full.stderr
    finally:
        cloud.api.put(f"/ops/servers/{servers[1]}", {"reserved": False})
    wrong = sdc(cloud, "vm", "migrate", "sync", vm["uuid"], "--to", servers[1])
    assert wrong.returncode == 2 and "--to" in wrong.stderr
    with pytest.raises(ApiError) as bad:
        cloud.api.post(path, {"action": "teleport"})
    assert bad.value.status == 422 and "action" in bad.value.errors
    with pytest.raises(ApiError) as unknown:
        cloud.api.post("/ops/machines/00000000-0000-4000-8000-000000000000/migrate",
                       {"action": "begin"})
    assert unknown.value.status == 404
    assert cloud.api.get("/ops/migrations", {"machine": vm["uuid"]}) == []

    estimate = sdc_json(cloud, "vm", "migrate", "estimate", vm["uuid"])
    assert estimate["size"] == 10240 * 1024 * 1024 and estimate["eta_ms"] > 0

    begun = subprocess_ok(cloud, "vm", "migrate", "begin", vm["uuid"], "--to", servers[2],
                          "--watch")
    assert "begin paused" in begun.stdout and servers[2] in begun.stdout
    synced = subprocess_ok(cloud, "vm", "migrate", "sync", vm["uuid"], "--watch")
    assert "sync paused" in synced.stdout and "sent 10." in synced.stdout
    assert "sync: success" in synced.stderr and "begin:" not in synced.stderr
    switched = subprocess_ok(cloud, "vm", "migrate", "switch", vm["uuid"], "--watch")
    assert f"switch successful: on server {servers[2]}" in switched.stdout
    assert "downtime" in switched.stdout
    rolled = subprocess_ok(cloud, "vm", "migrate", "rollback", vm["uuid"], "--watch")
    assert "rollback rolled_back" in rolled.stdout
    back = machine(cloud, vm["uuid"])
    assert (back["server_uuid"], back["state"]) == (servers[0], "running")

    rows = sdc_json(cloud, "vm", "migration", "list", "--machine", vm["uuid"])
    assert [(r["phase"], r["state"]) for r in rows] == [("rollback", "rolled_back")]
    got = sdc_json(cloud, "vm", "migration", "get", vm["uuid"])
    assert got["source_server_uuid"] == servers[0] and got["target_server_uuid"] == servers[2]
    assert [e["phase"] for e in got["progress_history"]][:1] == ["begin"]


def subprocess_ok(cloud: Cloud, *args: str) -> subprocess.CompletedProcess[str]:
    done = sdc(cloud, *args)
    assert done.returncode == 0, f"sdc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_evacuate_empties_the_server(cloud: Cloud, world: dict[str, Any]) -> None:
    servers = sorted(cloud.agents.values())
    # the server the earlier tests left emptiest: three machines of ours are on it then
    doomed = min(servers, key=lambda s: len(cloud.api.get("/ops/machines", {"server_uuid": s})))
    vms = [provision(cloud, f"evac{i}", server_uuid=doomed) for i in range(3)]
    on_it = cloud.api.get("/ops/machines", {"server_uuid": doomed})
    stopped = vms[2]
    cloud.wait_job(cloud.api.post(f"/ops/machines/{stopped['uuid']}",
                                  params={"action": "stop"})["job_uuid"])
    others = set(servers) - {doomed}
    try:
        for other in others:  # nowhere to go: each machine says why, nothing moves
            cloud.api.put(f"/ops/servers/{other}", {"reserved": True})
        stuck = sdc(cloud, "server", "evacuate", doomed, "--parallel", "2")
        assert stuck.returncode == 1, stuck.stdout + stuck.stderr
        assert stuck.stdout.count("not moved, on server " + doomed) == len(on_it)
        assert "InsufficientCapacity" in stuck.stdout and "0 of" in stuck.stdout
        assert cloud.server(doomed)["maintenance"] is True
        assert len(cloud.api.get("/ops/machines", {"server_uuid": doomed})) == len(on_it)
    finally:
        for other in others:
            cloud.api.put(f"/ops/servers/{other}", {"reserved": False})
    try:
        done = sdc(cloud, "server", "evacuate", doomed, "--parallel", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        lines = [row for row in done.stdout.splitlines() if "moved to" in row]
        assert len(lines) == len(on_it) >= 3, done.stdout
        assert f"{len(on_it)} of {len(on_it)} machine(s) moved" in done.stdout
        assert f"{stopped['uuid']} (evac2): moved to" in done.stdout
        assert cloud.api.get("/ops/machines", {"server_uuid": doomed}) == []
        assert cloud.server(doomed)["maintenance"] is True
        for vm in vms:
            now = machine(cloud, vm["uuid"])
            assert now["server_uuid"] in others
            assert now["state"] == ("stopped" if vm is stopped else "running")
            assert migration(cloud, vm["uuid"])["finished_timestamp"] is not None
        ours = {vm["uuid"] for vm in on_it}
        report = cloud.api.get("/ops/doctor")
        assert [f for f in report["findings"] if f.get("machine_uuid") in ours
                or f.get("server_uuid") == doomed] == []
        again = sdc(cloud, "server", "evacuate", doomed)
        assert again.returncode == 0 and "0 of 0 machine(s) moved" in again.stdout
    finally:
        cloud.api.put(f"/ops/servers/{doomed}", {"maintenance": False})
