"""The head node's Celery app: workflow steps, agent events and the periodic reconciler.

The API process imports it only to send messages; ``sdc headnode worker`` consumes the
``headnode`` queue and ``sdc headnode beat`` schedules :func:`workflows.tasks.reconcile`.
"""

from __future__ import annotations

from celery import Celery

from headnode.config import HeadnodeSettings, get_settings
from headnode.services.revocation import RevokedNodes
from schemas.agent import HEADNODE_QUEUE
from sdccommon import broker, signing, tasklog
from workflows.registry import load_all


def first_arg(task: str) -> str | None:
    """What the first argument of a head-node task names (events carry theirs in a dict)."""
    return "job" if task.startswith("workflows.") and task != "workflows.reconcile" else None


def make_app(settings: HeadnodeSettings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("sdc", broker=settings.redis_url, task_cls=signing.SignedTask,
                 include=["workflows.tasks", "workflows.capacity_tasks"])
    signing.serve_headnode(settings.resolved_message_key)
    # a forgotten node's key proves nothing any more (read lazily: the API never checks)
    signing.refuse_revoked(RevokedNodes(settings.resolved_database_url))
    app.conf.update(
        task_default_queue=HEADNODE_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A step message is acknowledged only once it has run: a worker killed mid-step
        # leaves the message to be delivered again, and the engine's attempt counter makes
        # the second delivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_transport_options=broker.transport_options(
            visibility_timeout=settings.broker_visibility_timeout,
            # look for abandoned messages every few seconds, not every 100 s
            unacked_restore_interval=5,
            unacked_restore_throttle=1,
        ),
        # through a Redis restart or failover, however long (sdccommon/broker.py)
        **broker.CONNECTION_SETTINGS,
        worker_hijack_root_logger=False,
        # Celery's remote control (shutdown, revoke, pool restarts, broadcast to every worker
        # over Redis) takes unsigned commands from anyone who reaches Redis; nothing of ours
        # uses it
        worker_enable_remote_control=False,
        # only the beat holding the cloud's beat lock sends (workflows/beat_lock.py)
        beat_scheduler="workflows.beat_lock:LockedScheduler",
        beat_schedule={
            "reconcile": {"task": "workflows.reconcile", "schedule": settings.reconcile_interval,
                          "options": {"expires": settings.reconcile_interval * 2}},
            "capacity-snapshot": {"task": "workflows.capacity_snapshot",
                                  "schedule": settings.capacity_history_interval,
                                  "options": {"expires": settings.capacity_history_interval}},
        },
    )
    return app


app = make_app()
# The worker runs the steps of every workflow, and the API sends the first ones.
load_all()
# Every failed task and rejected message is logged with the job and server it names.
tasklog.connect(first_arg)
