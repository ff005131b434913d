"""A machine's tags and metadata (``/machines/:id/tags``, ``/machines/:id/metadata``).

A change is a job (see headnode.services.machine_meta) that starts only once the answer has
been sent: its end, the audit entry ``triton ... -w`` waits for, is then surely newer than
the moment the client got the answer. (Were the process to die in between, the sweep starts
the committed job.)
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, after_this_request, jsonify, request

from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, tenant
from headnode.services import machine_meta
from headnode.services.context import JobQueue, ServiceContext
from schemas.cloudapi import load_pairs

blp = Blueprint("cloudapi_machine_meta", __name__)

KINDS = ("tags", "metadata")


def _kind(kind: str) -> machine_meta.Kind:
    return "tags" if kind == "tags" else "metadata"


class _AfterAnswer:
    """A job queue that holds the jobs a request starts until its answer has been sent."""

    def __init__(self, queue: JobQueue | None) -> None:
        self.queue = queue
        self.held: list[str] = []

    def enqueue(self, job_uuid: str) -> None:
        self.held.append(job_uuid)

    def backlog(self) -> int:
        return self.queue.backlog() if self.queue is not None else 0

    def cancel(self, job_uuid: str) -> None:
        if self.queue is not None:
            self.queue.cancel(job_uuid)

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any]) -> None:
        if self.queue is not None:
            self.queue.send_agent(server_uuid, op, params)

    def release(self) -> None:
        if self.queue is not None:
            for job_uuid in self.held:
                self.queue.enqueue(job_uuid)
        self.held.clear()


def changing_ctx() -> ServiceContext:
    """The service context for a change: its job is sent when the response is closed,
    i.e. after the server has written it."""
    base = ctx()
    queue = _AfterAnswer(base.jobs)

    @after_this_request
    def release_after_sending(response: Response) -> Response:
        response.call_on_close(queue.release)
        return response

    return ServiceContext(base.settings, jobs=queue, _sessions=base.sessions)


def _value(value: Any) -> Response:
    """One value: JSON, or bare text for ``Accept: text/plain`` (as CloudAPI does)."""
    if request.accept_mimetypes.best_match(["application/json", "text/plain"]) == "text/plain":
        return Response(value if isinstance(value, str) else json.dumps(value),
                        mimetype="text/plain")
    return jsonify(value)


for kind in KINDS:
    base = f"/machines/<uuid>/{kind}"

    def list_all(uuid: str, kind: str = kind) -> Any:
        return jsonify(machine_meta.read(ctx(), uuid, tenant().uuid, _kind(kind)))

    def add(uuid: str, kind: str = kind) -> Any:
        values = load_pairs(body_or_query(), kind)
        return jsonify(machine_meta.add(changing_ctx(), uuid, tenant().uuid, _kind(kind),
                                        values, job_caller()))

    def replace(uuid: str, kind: str = kind) -> Any:
        values = load_pairs(body_or_query(), kind)
        return jsonify(machine_meta.replace(changing_ctx(), uuid, tenant().uuid, _kind(kind),
                                            values, job_caller()))

    def delete_all(uuid: str, kind: str = kind) -> Any:
        machine_meta.delete_all(changing_ctx(), uuid, tenant().uuid, _kind(kind),
                                job_caller())
        return Response(status=204)

    def get_one(uuid: str, key: str, kind: str = kind) -> Any:
        return _value(machine_meta.read_one(ctx(), uuid, tenant().uuid, _kind(kind), key))

    def delete_one(uuid: str, key: str, kind: str = kind) -> Any:
        machine_meta.delete_one(changing_ctx(), uuid, tenant().uuid, _kind(kind), key,
                                job_caller())
        return Response(status=204)

    blp.add_url_rule(base, f"list_{kind}", list_all, methods=["GET"])
    blp.add_url_rule(base, f"add_{kind}", add, methods=["POST"])
    blp.add_url_rule(base, f"replace_{kind}", replace, methods=["PUT"])
    blp.add_url_rule(base, f"delete_all_{kind}", delete_all, methods=["DELETE"])
    blp.add_url_rule(f"{base}/<path:key>", f"get_{kind}", get_one, methods=["GET"])
    blp.add_url_rule(f"{base}/<path:key>", f"delete_{kind}", delete_one, methods=["DELETE"])
