"""A machine a status report leaves out, on the real PostgreSQL: suspected, asked about,
destroyed only on the node's confirmation (with its reservation, NIC and address released),
cleared by a later report or a "present" answer; a failed machine is never flipped to
running; the last report is kept on the server row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from headnode.services import networks
from headnode.store.models import Machine, Nic, Reservation, Server
from tests.unit.headnode.services.conftest import server_row
from tests.unit.workflows.conftest import get_machine
from tests.unit.workflows.test_nodes import REPORT_TIME, apply, committed_machine, status
from workflows import nodes

RESEND = 30.0


def with_nic(ctx: Any, machine: Machine) -> str:
    """Give the machine an address on a fresh public network; returns the address."""
    if not networks.list_networks(ctx, None):
        networks.create_network(ctx, {"name": "external", "subnet": "10.88.0.0/24"})
    with ctx.transaction() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None
        default = networks.requested_networks(session, row.owner_uuid, None)
        return networks.attach_nics(session, row, default, created_here=False)[0].ip


def ask(ctx: Any, now: float, server_uuid: str | None = None) -> list[nodes.Question]:
    with ctx.transaction() as session:
        return nodes.due_questions(session, RESEND, server_uuid=server_uuid, now=now)


def answer(ctx: Any, question: nodes.Question, outcome: dict[str, Any]) -> str:
    with ctx.transaction() as session:
        return nodes.apply_answer(session, question.reply(), outcome)


def not_found(server_uuid: str) -> dict[str, Any]:
    return {"ok": False, "server_uuid": server_uuid, "result": None,
            "error": {"code": "MachineNotFound", "message": "no such machine"},
            "started_at": 0.0, "finished_at": 0.0}


def found(server_uuid: str, uuid: str, state: str = "running") -> dict[str, Any]:
    return {"ok": True, "server_uuid": server_uuid, "error": None,
            "result": {"machine": {"uuid": uuid, "state": state}},
            "started_at": 0.0, "finished_at": 0.0}


def reservation_state(ctx: Any, uuid: str) -> str | None:
    with ctx.read() as session:
        res = session.get(Reservation, uuid)
        return res.state if res is not None else None


def nic_count(ctx: Any, uuid: str) -> int:
    with ctx.read() as session:
        return len(session.scalars(select(Nic).where(Nic.machine_uuid == uuid)).all())


def test_confirmed_gone_releases_reservation_nic_and_address(ctx: Any,
                                                             fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="gone")
    ip = with_nic(ctx, machine)
    apply(ctx, status(server_uuid, []))
    assert get_machine(ctx, machine.uuid).state == "running"

    [question] = ask(ctx, REPORT_TIME + 1)
    assert (question.server_uuid, question.machine_uuid) == (server_uuid, machine.uuid)
    assert question.reply() == {"query": nodes.MISSING_QUERY, "machine_uuid": machine.uuid,
                                "asked_at": REPORT_TIME + 1,
                                "suspected_since": "2096-10-02T07:06:40+00:00"}
    assert ask(ctx, REPORT_TIME + 2) == []  # asked already, not due again yet

    # another agent's error settles nothing; only the node's "not there" does
    assert answer(ctx, question, {**not_found(server_uuid), "error": {
        "code": "UnknownServer", "message": "not hosted here"}}) == "unsettled"
    assert answer(ctx, question, not_found(fleet["server"].uuid[::-1])) == "stale"
    assert get_machine(ctx, machine.uuid).state == "running"

    assert answer(ctx, question, not_found(server_uuid)) == "confirmed"
    assert get_machine(ctx, machine.uuid).state == "running"
    assert ask(ctx, REPORT_TIME + 100) == []  # answered: no more questions
    assert ip in [a["ip"] for a in networks.list_network_ips(ctx, "external", None)]

    # the node's next report agrees: gone
    assert apply(ctx, status(server_uuid, [], timestamp=REPORT_TIME + 5)) == 1
    row = get_machine(ctx, machine.uuid)
    assert row.state == "destroyed" and row.destroyed_at is not None
    assert row.missing_since is None
    assert reservation_state(ctx, machine.uuid) == "released"
    assert nic_count(ctx, machine.uuid) == 0
    assert ip not in [a["ip"] for a in networks.list_network_ips(ctx, "external", None)]
    server = server_row(ctx, server_uuid)
    assert (server.machine_count, server.ram_committed_mb) == (0, 0)
    # a duplicate answer changes nothing twice
    assert answer(ctx, question, not_found(server_uuid)) == "stale"


def test_a_later_report_listing_it_again_clears_the_suspicion(ctx: Any,
                                                             fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="back")
    apply(ctx, status(server_uuid, []))
    [question] = ask(ctx, REPORT_TIME + 1)
    apply(ctx, status(server_uuid, [(machine.uuid, "running")], timestamp=REPORT_TIME + 2))
    assert get_machine(ctx, machine.uuid).missing_since is None
    # the answer to the question asked before comes late: it settles nothing
    assert answer(ctx, question, not_found(server_uuid)) == "stale"
    assert get_machine(ctx, machine.uuid).state == "running"
    assert reservation_state(ctx, machine.uuid) == "committed"


def test_a_present_answer_clears_and_an_old_question_cannot_confirm_a_new_suspicion(
        ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="here")
    apply(ctx, status(server_uuid, []))
    [first] = ask(ctx, REPORT_TIME + 1)
    assert answer(ctx, first, found(server_uuid, machine.uuid, "stopped")) == "present"
    row = get_machine(ctx, machine.uuid)
    assert (row.missing_since, row.state) == (None, "stopped")  # the node's state wins
    # and is the node's last word about it (its delta reports will not list it again)
    assert server_row(ctx, server_uuid).reported_machines == {machine.uuid: "stopped"}

    # left out again by a later report: the first question's answer is about the past
    apply(ctx, status(server_uuid, [], timestamp=REPORT_TIME + 10))
    assert answer(ctx, first, not_found(server_uuid)) == "stale"
    assert get_machine(ctx, machine.uuid).state == "stopped"
    [second] = ask(ctx, REPORT_TIME + 11)
    assert answer(ctx, second, not_found(server_uuid)) == "confirmed"


def test_a_node_clock_ahead_of_ours_still_settles(ctx: Any, fleet: dict[str, Any]) -> None:
    # the report is stamped by the node's clock, the question by ours: decades apart here
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="skewed")
    apply(ctx, status(server_uuid, []))  # taken at REPORT_TIME, in 2096
    [question] = ask(ctx, 1_800_000_000.0)
    assert answer(ctx, question, not_found(server_uuid)) == "confirmed"
    apply(ctx, status(server_uuid, [], timestamp=REPORT_TIME + 5))
    assert get_machine(ctx, machine.uuid).state == "destroyed"


def test_a_second_agent_for_the_node_cannot_destroy_what_the_real_one_reports(
        ctx: Any, fleet: dict[str, Any]) -> None:
    # Two agents serve one node: the empty one's reports and answers alternate with the
    # real one's. Even when the empty one answers the question, the real one's next report
    # lists the machine and clears the suspicion before another empty report can agree.
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="twice")
    at = REPORT_TIME
    for _ in range(3):
        apply(ctx, status(server_uuid, [], timestamp=at))  # the empty agent
        [question] = ask(ctx, at + 1)
        assert answer(ctx, question, not_found(server_uuid)) == "confirmed"  # it answers
        apply(ctx, status(server_uuid, [(machine.uuid, "running")], timestamp=at + 2))
        row = get_machine(ctx, machine.uuid)
        assert (row.state, row.missing_since, row.missing_confirmed_at) == ("running", None,
                                                                            None)
        at += 10
    assert reservation_state(ctx, machine.uuid) == "committed"


def test_unanswered_questions_are_asked_again_and_unknown_servers_are_not_asked(
        ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    committed_machine(ctx, fleet, alias="quiet")
    apply(ctx, status(server_uuid, []))
    assert len(ask(ctx, REPORT_TIME + 1, server_uuid=server_uuid)) == 1
    assert ask(ctx, REPORT_TIME + 1 + RESEND - 1) == []
    assert len(ask(ctx, REPORT_TIME + 2 + RESEND)) == 1  # lost question or answer: ask again
    with ctx.transaction() as session:
        server = session.get(Server, server_uuid)
        assert server is not None
        server.status = "unknown"
    assert ask(ctx, REPORT_TIME + 10 * RESEND) == []


def test_a_machine_a_job_holds_is_not_asked_about(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="busy")
    apply(ctx, status(server_uuid, []))
    with ctx.transaction() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None
        row.job_uuid = "a-job"
    assert ask(ctx, REPORT_TIME + 1) == []


def test_a_failed_machine_reported_running_stays_failed(ctx: Any, fleet: dict[str, Any]) -> None:
    from tests.unit.headnode.services.conftest import make_machine

    server_uuid = fleet["server"].uuid
    failed = make_machine(ctx, fleet, alias="failed", state="failed")
    assert apply(ctx, status(server_uuid, [(failed.uuid, "running")])) == 0
    assert get_machine(ctx, failed.uuid).state == "failed"


def test_the_last_report_is_kept_and_an_older_one_is_ignored(ctx: Any,
                                                             fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="kept")
    apply(ctx, status(server_uuid, [(machine.uuid, "running"), ("stray", "stopped")]))
    server = server_row(ctx, server_uuid)
    assert server.reported_machines == {machine.uuid: "running", "stray": "stopped"}
    assert server.last_status_at is not None and server.last_status_at.timestamp() == REPORT_TIME
    # a report taken before the one applied (delayed in the queue) changes nothing
    apply(ctx, status(server_uuid, [], timestamp=REPORT_TIME - 1))
    assert server_row(ctx, server_uuid).reported_machines == {machine.uuid: "running",
                                                              "stray": "stopped"}
    assert get_machine(ctx, machine.uuid).missing_since is None


def test_on_sqlite_too(tmp_path: Any) -> None:
    """``sdc up`` keeps its records in SQLite, which gives stored times back naive."""
    import time

    from headnode.config import HeadnodeSettings
    from headnode.services import doctor
    from headnode.services.context import ServiceContext
    from headnode.store.db import session_factory
    from headnode.store.migrate import upgrade
    from headnode.store.models import Account, Image, Package

    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    lite = ServiceContext(HeadnodeSettings(database_url=url), None, session_factory(url))
    with lite.transaction() as session:
        session.add(Server(uuid="s1", hostname="cn1", backend="sim", ram_mb=1, cpus=1,
                           disk_mb=1, status="running"))
        owner, package, image = Account(login="alice", email="a@b.c"), Package(
            name="small", memory=1, disk=1), Image(name="base")
        session.add_all([owner, package, image])
        session.flush()
        session.add(Machine(uuid="m1", alias="m1", owner_uuid=owner.uuid,
                            package_uuid=package.uuid, image_uuid=image.uuid,
                            server_uuid="s1", state="running", ram_mb=1, disk_mb=1))
    with lite.transaction() as session:
        nodes.apply_status(session, status("s1", [("stray", "running")],
                                           timestamp=time.time() + 1))
        [question] = nodes.due_questions(session, RESEND)
    assert question.machine_uuid == "m1"
    assert [(f["kind"], f["machine_uuid"]) for f in doctor.doctor(lite)["findings"]] == [
        ("orphan", "stray"), ("missing", "m1"), ("leaked_reservation", "m1")]  # never reserved
    with lite.transaction() as session:
        assert nodes.apply_answer(session, question.reply(), not_found("s1")) == "confirmed"
    with lite.transaction() as session:
        nodes.apply_status(session, status("s1", [("stray", "running")],
                                           timestamp=time.time() + 2))
    assert [f["kind"] for f in doctor.doctor(lite)["findings"]] == ["orphan"]
