"""Every head-node setting (API, workflow worker, beat), read in one place."""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.settings import SettingsError, env_name, load, setting
from sdccommon import private_files

DEFAULT_DATA_DIR = Path("~/.sdc").expanduser()
DEFAULT_IMAGE_CACHE = Path("~/.cache/sdc/images").expanduser()

# The placement policy's vocabulary, which settings name and headnode/placement/ uses.
SPREAD, PACK = "spread", "pack"
#: how placement ranks the servers that fit: the emptiest first, or the fullest first
PLACEMENT_STRATEGIES = (SPREAD, PACK)
#: the placement filters an operator may leave out; the others (room, server state) always
#: run, because the reservation's guard applies the same rules
OPTIONAL_FILTERS = ("headnode", "traits", "backend", "affinity")


@dataclass(frozen=True)
class HeadnodeSettings:
    data_dir: Path = setting(DEFAULT_DATA_DIR, "Where the head node keeps its files "
                             "(SQLite database, operator token, image files).")
    database_url: str = setting("", "SQLAlchemy URL of the database; empty means a SQLite "
                                "file in SDC_DATA_DIR (PostgreSQL in production: "
                                "postgresql+psycopg://user@host/db).")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis: the Celery broker and the "
                             "heartbeat table (never the system of record).")
    api_bind: str = setting("127.0.0.1:8080", "host:port the API listens on.")
    api_workers: int = setting(2, "gunicorn worker processes for the API.")
    tls_cert: str = setting("", "PEM file of the certificate (and its chain) the API serves "
                            "HTTPS with; empty serves plain HTTP.")
    tls_key: str = setting("", "PEM file of the private key of SDC_TLS_CERT.")
    ca_file: str = setting("", "PEM file of the CA(s) the sdc client trusts for the API's "
                           "HTTPS certificate; empty means the system's CAs.")
    allow_plain_http: bool = setting(False, "Allow plain HTTP beyond loopback: the API "
                                     "serving without TLS on a non-loopback bind (behind a "
                                     "TLS proxy), the sdc client sending the operator token "
                                     "to an http:// URL of another host.")
    image_base_url: str = setting("", "Base URL compute nodes fetch and upload image files "
                                  "at; empty means http://<SDC_API_BIND> (https:// with "
                                  "SDC_TLS_CERT).")
    image_cache: Path = setting(DEFAULT_IMAGE_CACHE, "Where `sdc image build-debian` keeps "
                                "the images it built, reused by a later build of the same "
                                "inputs.")
    node_redis_url: str = setting("", "The Redis URL (with its password) as compute nodes "
                                  "reach it, written to each node set up over SSH; empty "
                                  "means SDC_REDIS_URL.")
    node_ca_file: str = setting("", "PEM file of the CA(s) compute nodes check the image "
                                "store's HTTPS certificate with, copied to each node set up "
                                "over SSH; empty means SDC_CA_FILE.")
    node_connect_timeout: float = setting(30.0, "Seconds the head node gives a node's SSH "
                                          "server to answer and log it in, per step of a "
                                          "setup or agent upgrade.")
    agent_bundle_dir: str = setting("", "Where the agent wheels for nodes are kept (uploaded "
                                    "ones, ones built from this checkout, and their "
                                    "dependencies); empty means SDC_DATA_DIR/agent-bundles.")
    operator_token: str = setting("", "Bearer token of the operator API; empty means the one "
                                  "stored in SDC_DATA_DIR/operator-token (made on first use).")
    message_key: str = setting("", "Secret the head node signs its messages with and derives "
                               "each node's key from (`sdc server credentials`); empty means "
                               "the one stored in SDC_DATA_DIR/message-key (made on first "
                               "use). Every head-node machine needs the same one.")
    # A new provision waits about this many messages / throughput before its first step
    # (~1.2 s at 50 provisions/s): bench/provision_throughput.py's p99 stays under 2 s.
    provision_backlog_limit: int = setting(
        64, "Refuse new provisions with 429 RequestThrottled (and Retry-After) while this "
        "many messages wait for the workflow worker; 0 never refuses.")
    worker_concurrency: int = setting(4, "Threads (or processes) of the workflow worker.")
    # Threads by default: a step is mostly waiting on PostgreSQL or Redis, and a prefork
    # pool costs every message a trip through a pipe to a child (measured: ~3 ms of a
    # provision's worker CPU on 2 cores, bench/provision_throughput.py).
    worker_pool: str = setting("threads", "Celery pool of the workflow worker: threads, "
                               "prefork (processes) or solo.")
    worker_processes: int = setting(1, "Workflow-worker processes `sdc headnode worker` "
                                    "starts (each with SDC_WORKER_CONCURRENCY threads).")
    event_consumers: int = setting(1, "Node-event consumer processes (`sdc headnode events`: "
                                   "status reports, sysinfo) `sdc headnode worker` starts "
                                   "beside its workflow workers; 0 when they run apart.")
    event_batch: int = setting(200, "Node events one consumer applies in one transaction, "
                               "at most.")
    event_batch_wait: float = setting(0.3, "Seconds a node-event consumer waits to fill a "
                                      "batch once its first event came.")
    heartbeat_lifetime: float = setting(11.0, "Seconds without a heartbeat before a server "
                                        "is unknown (CNAPI: 5 s interval + a miss + 1 s).")
    reconcile_interval: float = setting(5.0, "Seconds between heartbeat reconciliations and "
                                        "job-deadline sweeps.")
    beat_lock_ttl: float = setting(30.0, "Seconds the beat lock lasts unless renewed: only "
                                   "the beat holding it schedules, and a second beat takes "
                                   "over this long after the first stopped renewing it.")
    resend_interval: float = setting(30.0, "Seconds a job waits for a message it sent (its "
                                     "first step, an agent task) to be taken up or answered "
                                     "before sending it again; every such message is "
                                     "idempotent.")
    broker_visibility_timeout: float = setting(60.0, "Seconds before a message taken by a "
                                               "worker that died unacknowledged is delivered "
                                               "again (head-node tasks all take well under "
                                               "this).")
    reservation_ratio: float = setting(0.15, "Share of each server's RAM kept for the system.")
    pool_usable_ratio: float = setting(0.94, "Share of each pool usable for machines.")
    max_machines_per_server: int = setting(224, "Machine count limit per server.")
    # Placement policy (docs/placement.md): DAPI's ALLOC_* figures, Nova's enabled_filters
    # and weight multipliers.
    ram_overprovision: float = setting(1.0, "RAM overprovision ratio: a server's machines "
                                       "may together be promised this many times its RAM.")
    cpu_overprovision: float = setting(4.0, "CPU overprovision ratio: capped machines may "
                                       "together be given this many times a server's CPUs.")
    disk_overprovision: float = setting(1.0, "Disk overprovision ratio: machine quotas may "
                                        "together take this many times a server's pool.")
    placement_strategy: str = setting("spread", "spread (the emptiest server that fits "
                                      "first) or pack (the fullest first, as Triton's DAPI).")
    placement_filters: str = setting("headnode,traits,backend,affinity", "Optional placement "
                                     "filters that run, comma-separated; the filters on room "
                                     "and server state always run.")
    weight_unreserved_ram: float = setting(2.0, "Weight of the unreserved-RAM scorer "
                                           "(0 or more; 0 turns it off).")
    weight_unreserved_disk: float = setting(1.0, "Weight of the unreserved-disk scorer.")
    weight_owner_spread: float = setting(1.0, "Weight of spreading one owner's machines over "
                                         "servers.")
    weight_soft_affinity: float = setting(5.0, "Weight of soft affinity rules (==~, !=~).")
    weight_uniform_random: float = setting(0.5, "Weight of the random scorer (it keeps "
                                           "concurrent creates off one server).")
    placement_candidates: int = setting(100, "Servers that fit a create looks for, visiting "
                                        "the fleet in a random order, before it scores "
                                        "only those (0: every server).")
    capacity_history_interval: float = setting(300.0, "Seconds between capacity history "
                                               "snapshots (fleet utilization).")
    capacity_history_days: float = setting(30.0, "Days a capacity history snapshot is kept.")
    user_migration_allowed: bool = setting(False, "Let accounts migrate their own machines "
                                           "(CloudAPI Migrate); operators always may.")
    migration_estimate_mbps: float = setting(100.0, "MB/s a migration estimate assumes when "
                                             "no recent migration measured a rate.")

    def __post_init__(self) -> None:
        _check_placement(self)
        _check_tls(self)

    @property
    def placement_filter_names(self) -> tuple[str, ...]:
        return parse_filter_names(self.placement_filters)

    @property
    def placement_weights(self) -> dict[str, float]:
        """Scorer name (``-`` as ``_``) -> weight."""
        return {f.name.removeprefix(WEIGHT): getattr(self, f.name)
                for f in dataclasses.fields(self) if f.name.startswith(WEIGHT)}

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sdc.sqlite'}"

    @property
    def resolved_node_redis_url(self) -> str:
        return self.node_redis_url or self.redis_url

    @property
    def resolved_agent_bundle_dir(self) -> Path:
        return Path(self.agent_bundle_dir) if self.agent_bundle_dir \
            else self.data_dir / "agent-bundles"

    def resolved_operator_token(self) -> str:
        """The configured token, else the stored one, else a new one stored for next time."""
        return self.operator_token or self._stored_secret("operator-token")

    def resolved_message_key(self) -> bytes:
        """The key every node's message key derives from (sdccommon/signing.py)."""
        return (self.message_key or self._stored_secret("message-key")).encode()

    def _stored_secret(self, name: str) -> str:
        """The secret stored in SDC_DATA_DIR/``name``, made (0600) on first use."""
        path = self.data_dir / name
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            private_files.create_once(path, (secrets.token_urlsafe(32) + "\n").encode())
        return path.read_text().strip()


WEIGHT = "weight_"
OVERPROVISION = ("ram_overprovision", "cpu_overprovision", "disk_overprovision")


def parse_filter_names(text: str) -> tuple[str, ...]:
    """SDC_PLACEMENT_FILTERS' comma-separated names, each an optional filter."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in OPTIONAL_FILTERS:
            raise SettingsError(
                f"SDC_PLACEMENT_FILTERS: no optional filter named {name!r}: the optional ones "
                f"are {', '.join(OPTIONAL_FILTERS)} (the filters on room and server state "
                "always run)")
    return names


def _check_placement(s: HeadnodeSettings) -> None:
    """A placement setting that cannot work stops the process at start, naming it."""
    for name in OVERPROVISION:
        value = getattr(s, name)
        if not (math.isfinite(value) and value > 0):
            raise SettingsError(f"{env_name(name)}: must be a number above 0, got {value}")
    for name, weight in s.placement_weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise SettingsError(f"{env_name(WEIGHT + name)}: a weight must be 0 or more, "
                                f"got {weight}")
    parse_filter_names(s.placement_filters)
    if s.placement_candidates < 0:
        raise SettingsError(f"SDC_PLACEMENT_CANDIDATES: must be 0 (every server) or more, "
                            f"got {s.placement_candidates}")
    if s.placement_strategy not in PLACEMENT_STRATEGIES:
        raise SettingsError(f"SDC_PLACEMENT_STRATEGY: must be "
                            f"{' or '.join(PLACEMENT_STRATEGIES)}, got {s.placement_strategy!r}")


def _check_tls(s: HeadnodeSettings) -> None:
    """A certificate without its key (or the reverse) cannot serve HTTPS: say so at start."""
    if bool(s.tls_cert) != bool(s.tls_key):
        raise SettingsError("SDC_TLS_CERT and SDC_TLS_KEY: set both (HTTPS) or neither "
                            "(plain HTTP)")


def get_settings(**overrides: Any) -> HeadnodeSettings:
    return load(HeadnodeSettings, None, **overrides)
