"""A machine's metadata between the head node and its node, on the whole cloud as real
processes (tests/integration/conftest.py): a guest's own change arrives as
``events.machine_metadata`` and the workflow worker applies it if newer; an account's new key
reaches its machines' node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from schemas.agent import HEADNODE_QUEUE, agent_queue, agent_task
from sdccommon import signing
from tests.integration.conftest import Cloud
from tests.support.httpsig_client import Signer
from tests.support.wait import wait_until

#: one worker thread: the events of a test are applied in the order they were sent
CLOUD_ENV = {"SDC_WORKER_CONCURRENCY": "1"}


@pytest.fixture(scope="module")
def client(cloud: Cloud) -> Iterator[Celery]:
    """Plays the agents' side of the queues."""
    url = cloud.env["SDC_REDIS_URL"]
    app = Celery("test-node", broker=url, backend=url, set_as_current=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def machine(cloud: Cloud) -> dict[str, Any]:
    cloud.seed()
    made = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                            "image": "base-64", "alias": "guest"})
    assert cloud.wait_job(made["job_uuid"])["execution"] == "succeeded"
    return dict(cloud.api.get(f"/ops/machines/{made['uuid']}"))


def metadata(cloud: Cloud, machine_uuid: str) -> dict[str, Any]:
    return dict(cloud.api.get(f"/ops/machines/{machine_uuid}")["metadata"])


def guest_change(client: Celery, change: dict[str, Any]) -> None:
    """Sent as the node the change names (a change naming none is refused unread)."""
    client.send_task("events.machine_metadata", args=[change], queue=HEADNODE_QUEUE,
                     headers={signing.SENDER: str(change.get("server_uuid", "nobody"))})


def test_a_guests_change_is_applied_by_the_worker_if_newer(cloud: Cloud, client: Celery,
                                                           machine: dict[str, Any]) -> None:
    uuid, server = machine["uuid"], machine["server_uuid"]
    guest_change(client, {"server_uuid": server, "uuid": uuid, "serial": 1,
                          "customer_metadata": {"motd": "from the guest"}})
    wait_until(lambda: metadata(cloud, uuid) == {"motd": "from the guest"}, timeout=20,
               message=lambda: f"the guest's change; metadata is {metadata(cloud, uuid)}")
    # dropped: not parsable, another server's word, older than what was applied
    guest_change(client, {"uuid": uuid, "serial": "two"})
    guest_change(client, {"server_uuid": "not-its-server", "uuid": uuid, "serial": 5,
                          "customer_metadata": {"motd": "from elsewhere"}})
    guest_change(client, {"server_uuid": server, "uuid": uuid, "serial": 0,
                          "customer_metadata": {"motd": "stale"}})
    # applied in order after them: had the other server's serial 5 been taken, this
    # serial 2 would be refused as older
    guest_change(client, {"server_uuid": server, "uuid": uuid, "serial": 2,
                          "customer_metadata": {"motd": "again", "user-data": "x"}})
    wait_until(lambda: metadata(cloud, uuid) == {"motd": "again", "user-data": "x"},
               timeout=20, message=lambda: f"the second change; {metadata(cloud, uuid)}")


def test_a_new_key_reaches_the_machines_node(cloud: Cloud, client: Celery,
                                             machine: dict[str, Any]) -> None:
    signer = Signer("alice", kind="ed25519")
    cloud.api.post("/ops/accounts/alice/keys", {"name": "laptop", "key": signer.public_line})
    value = f"{signer.public_line}\n"
    assert metadata(cloud, machine["uuid"])["root_authorized_keys"] == value

    def on_node() -> dict[str, Any]:
        # a change of nothing answers the machine's metadata as its node holds it
        result = client.send_task(
            agent_task("machine_update_metadata"),
            args=[machine["server_uuid"], {"uuid": machine["uuid"]}, None],
            queue=agent_queue(machine["server_uuid"])).get(timeout=20)
        assert result["ok"], result
        return dict(result["result"]["customer_metadata"])

    wait_until(lambda: on_node().get("root_authorized_keys") == value, timeout=20,
               message=lambda: f"the key on the node; it has {on_node()}")
