"""Log every message a Celery worker rejects and every task that fails, naming what it was for.

Celery's own records name a failed task by its id, and a rejected message by its task name at
best; an operator looking for what happened to a job needs the job and the server. So
:func:`connect` adds one line per failed task and per rejected message (unknown task, a
message Celery refuses to run) with the job and server its arguments name. Both the workflow
worker and the agents use it; each says which of its tasks take a job or a server first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: task name -> what its first positional argument is ("job", "server") or None
FirstArg = Callable[[str], str | None]

#: the keys of a dict argument that name a job or a server (a reply address, a status
#: report, a sysinfo with SmartOS names)
_KEYS = {"job_uuid": "job", "server_uuid": "server", "UUID": "server"}


def subject(task: str, args: Sequence[Any], kwargs: Mapping[str, Any],
            first_arg: FirstArg) -> dict[str, str]:
    """``{"job": ..., "server": ...}``, as far as the message's arguments say."""
    found: dict[str, str] = {}
    role = first_arg(task)
    if role and args and isinstance(args[0], str):
        found[role] = args[0]
    for value in [*args, *kwargs.values(), kwargs]:
        if not isinstance(value, Mapping):
            continue
        for key, role in _KEYS.items():
            if isinstance(value.get(key), str):
                found.setdefault(role, value[key])
    return found


def describe(found: Mapping[str, str]) -> str:
    return f"job {found.get('job', '?')} server {found.get('server', '?')}"


def payload(message: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """(task name, args, kwargs) of a kombu message, as far as it can be read."""
    headers = getattr(message, "headers", None) or {}
    name = str(headers.get("task") or "?")
    try:
        body = message.decode()
    except Exception:  # noqa: BLE001 - an unreadable body is itself what we report
        return name, [], {}
    if isinstance(body, (list, tuple)) and len(body) >= 2:  # Celery's protocol 2
        args, kwargs = body[0], body[1]
    elif isinstance(body, Mapping):  # protocol 1
        name = str(body.get("task") or name)
        args, kwargs = body.get("args"), body.get("kwargs")
    else:
        return name, [], {}
    return (name, list(args) if isinstance(args, (list, tuple)) else [],
            dict(kwargs) if isinstance(kwargs, Mapping) else {})


def connect(first_arg: FirstArg) -> None:
    """Log failures and rejections in this process's Celery workers from now on."""
    from celery import signals

    def failed(sender: Any = None, task_id: str | None = None,
               exception: BaseException | None = None, args: Any = None, kwargs: Any = None,
               **_: Any) -> None:
        name = str(getattr(sender, "name", "?"))
        found = subject(name, list(args or []), dict(kwargs or {}), first_arg)
        log.error("task %s[%s] failed (%s): %s: %s", name, task_id, describe(found),
                  type(exception).__name__, exception)

    def unknown(sender: Any = None, name: str | None = None, id: str | None = None,  # noqa: A002
                message: Any = None, **_: Any) -> None:
        _task, args, kwargs = payload(message)
        found = subject(str(name), args, kwargs, first_arg)
        log.error("rejected a message for the unknown task %r [%s] (%s): args %.500r",
                  name, id, describe(found), args)

    def rejected(sender: Any = None, message: Any = None, exc: BaseException | None = None,
                 **_: Any) -> None:
        name, args, kwargs = payload(message)
        found = subject(name, args, kwargs, first_arg)
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "not a task message"
        log.error("rejected a message for task %s (%s): %s; args %.500r", name,
                  describe(found), reason, args)

    # One receiver each, however often a process connects (a worker started twice in tests).
    signals.task_failure.connect(failed, weak=False, dispatch_uid="sdc-tasklog-failure")
    signals.task_unknown.connect(unknown, weak=False, dispatch_uid="sdc-tasklog-unknown")
    signals.task_rejected.connect(rejected, weak=False, dispatch_uid="sdc-tasklog-rejected")
