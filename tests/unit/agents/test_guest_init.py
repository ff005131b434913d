"""The guest init (agents/guest): what it writes for given metadata, on a temporary root
directory, and the real init as a process against a real metadata server on a temp socket,
with ``sleep`` as its supervised service instead of sshd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.backends.linux.mdata import DictProvider, MetadataServer
from agents.guest.bootfiles import (
    USER_DATA,
    USER_SCRIPT,
    USER_SCRIPT_LOG,
    GuestFile,
    User,
    find_user,
    hosts_content,
    plan_files,
    valid_hostname,
    write_files,
)
from agents.guest.sdc_init import describe_exit, fetch_metadata, hostkeys_argv, needs_hostkeys
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[3]
KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ4 alice@laptop\n"
ME = User("debian", os.getuid(), os.getgid(), "/home/debian")


# ---------------------------------------------------------------------------- pure parts


def test_find_user_reads_passwd_text() -> None:
    passwd = "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1001::/home/debian:/bin/bash\n"
    assert find_user(passwd, "debian") == User("debian", 1000, 1001, "/home/debian")
    assert find_user(passwd, "nobody") is None
    assert find_user("debian:x:bad:1::/h:/bin/sh\n", "debian") is None


def test_hosts_puts_the_hostname_on_127_0_1_1_and_keeps_other_lines() -> None:
    existing = "127.0.0.1\tlocalhost\n127.0.1.1\told\n10.0.0.5 db\n"
    assert hosts_content(existing, "web1") == (
        "127.0.0.1\tlocalhost\n10.0.0.5 db\n127.0.1.1\tweb1\n")
    assert hosts_content("", "a.example.com") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\ta.example.com a\n")


@pytest.mark.parametrize("name,ok", [("web1", True), ("a-b.example.com", True), ("", False),
                                     ("bad name", False), ("x/y", False), ("a" * 64, False),
                                     ("ünï", False), ("a..b", False)])
def test_valid_hostname(name: str, ok: bool) -> None:
    assert valid_hostname(name) is ok


def test_plan_for_every_key() -> None:
    metadata = {"sdc:hostname": "web1", "root_authorized_keys": KEYS.strip(),
                "user-data": "data", "user-script": "#!/bin/sh\ntrue\n"}
    plan = {f.path: f for f in plan_files(metadata, User("debian", 1000, 1000, "/home/debian"),
                                          "")}
    assert plan["etc/hostname"].content == b"web1\n"
    assert b"127.0.1.1\tweb1" in (plan["etc/hosts"].content or b"")
    assert plan["home/debian/.ssh"] == GuestFile("home/debian/.ssh", None, 0o700, 1000, 1000)
    assert plan["home/debian/.ssh/authorized_keys"] == GuestFile(
        "home/debian/.ssh/authorized_keys", KEYS.encode(), 0o600, 1000, 1000)
    assert plan[USER_DATA].content == b"data" and plan[USER_DATA].mode == 0o600
    assert plan[USER_SCRIPT].mode == 0o700
    paths = list(plan)
    assert paths.index("home/debian/.ssh") < paths.index("home/debian/.ssh/authorized_keys")


def test_a_missing_key_skips_its_step() -> None:
    assert plan_files({}, ME, "") == []
    # no default user in the image: the keys have nowhere to go
    assert plan_files({"root_authorized_keys": KEYS}, None, "") == []
    # a bad hostname is not written
    assert plan_files({"sdc:hostname": "no good"}, ME, "") == []
    assert [f.path for f in plan_files({"user-data": ""}, ME, "")] == ["var/db", USER_DATA]


def test_write_files_sets_owner_and_mode_and_replaces_links(tmp_path: Path) -> None:
    home = tmp_path / "home/debian"
    home.mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep")
    (home / ".ssh").mkdir()
    (home / ".ssh/authorized_keys").symlink_to(target)  # a user's trap for root
    write_files(str(tmp_path), plan_files({"root_authorized_keys": KEYS}, ME, ""))
    keys = home / ".ssh/authorized_keys"
    assert not keys.is_symlink() and keys.read_text() == KEYS
    assert target.read_text() == "keep"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (home / ".ssh").stat().st_mode & 0o777 == 0o700
    assert (keys.stat().st_uid, keys.stat().st_gid) == (ME.uid, ME.gid)
    # a second boot with other keys replaces the file, whatever was left at the temp name
    (home / ".ssh/authorized_keys.sdc-init").symlink_to(target)
    assert write_files(str(tmp_path), plan_files({"root_authorized_keys": "ssh-rsa B"}, ME,
                                                  "")) == []
    assert keys.read_text() == "ssh-rsa B\n" and target.read_text() == "keep"


def test_a_file_that_cannot_be_written_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var/db").write_text("a file where a directory belongs")
    failures = write_files(str(tmp_path), plan_files(
        {"user-data": "d", "sdc:hostname": "web1"}, ME, ""))
    assert [f.split(":")[0] for f in failures] == ["/var/db", "/var/db/mdata-user-data"]
    assert (tmp_path / "etc/hostname").read_text() == "web1\n"


def test_hostkeys_step(tmp_path: Path) -> None:
    assert not needs_hostkeys(str(tmp_path))  # no sshd in this image
    (tmp_path / "etc/ssh").mkdir(parents=True)
    assert needs_hostkeys(str(tmp_path))
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("k")
    assert not needs_hostkeys(str(tmp_path))
    assert hostkeys_argv("/") == ["ssh-keygen", "-A"]
    assert hostkeys_argv(str(tmp_path)) == ["ssh-keygen", "-A", "-f", str(tmp_path)]


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by signal 9"


def test_fetch_metadata_without_a_socket_skips(tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    assert fetch_metadata(str(tmp_path / "absent.sock")) is None
    assert "no metadata socket" in capfd.readouterr().err


# ---------------------------------------------------------------------------- the process


@pytest.fixture
def guest_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "home/debian").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\ndebian:x:{ME.uid}:{ME.gid}::/home/debian:/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    return root


@pytest.fixture
def metadata_server(tmp_path: Path) -> Iterator[MetadataServer]:
    server = MetadataServer(tmp_path / "mdata" / "metadata.sock", DictProvider(
        {"sdc:hostname": "web1", "sdc:uuid": "u-1"},
        {"root_authorized_keys": KEYS, "user-data": "the data",
         # the user-script talks to the same socket, as mdata-put inside a machine does
         "user-script": f"#!/bin/sh\necho ran as $(id -u)\n"
                        f"{sys.executable} -m agents.backends.linux.mdata_client put seen yes\n"
                        f"exit 3\n"}))
    server.start()
    yield server
    server.stop()


def start_init(root: Path, socket: Path, service: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SDC_GUEST_ROOT": str(root), "MDATA_SOCKET": str(socket),
           "SDC_INIT_SERVICE": service, "SDC_INIT_STOP_GRACE": "5",
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "agents.guest.sdc_init"], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def stop(init: subprocess.Popen[str]) -> tuple[int, str]:
    init.send_signal(signal.SIGTERM)
    code = init.wait(timeout=20)
    assert init.stderr is not None
    return code, init.stderr.read()


def test_init_applies_metadata_supervises_and_stops(
        guest_root: Path, metadata_server: MetadataServer) -> None:
    init = start_init(guest_root, metadata_server.socket_path, "sleep 1000")
    try:
        log = guest_root / USER_SCRIPT_LOG
        wait_until(lambda: log.exists() and "exited with status 3" in log.read_text(),
                   timeout=30)
        assert (guest_root / "etc/hostname").read_text() == "web1\n"
        assert "127.0.1.1\tweb1" in (guest_root / "etc/hosts").read_text()
        keys = guest_root / "home/debian/.ssh/authorized_keys"
        assert keys.read_text() == KEYS and keys.stat().st_mode & 0o777 == 0o600
        assert (guest_root / USER_DATA).read_text() == "the data"
        assert f"ran as {os.getuid()}" in log.read_text()
        assert metadata_server.provider.get("seen") == "yes"
        assert (guest_root / "run/sshd").is_dir()
        if shutil.which("ssh-keygen"):
            assert (guest_root / "etc/ssh/ssh_host_ed25519_key").exists()
        # the service is restarted when it dies
        wait_until(lambda: len(children_of(init.pid)) == 1, timeout=10)
        first = children_of(init.pid)[0]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: children_of(init.pid) not in ([], [first]), timeout=10)
        service = children_of(init.pid)[0]
    finally:
        code, err = stop(init)
    assert code == 0
    assert "user-script exited with status 3" in err
    assert "sleep killed by signal 9: restarting" in err
    assert "stopped" in err
    with pytest.raises(ProcessLookupError):
        os.kill(service, 0)


def test_init_without_a_metadata_socket_still_runs_its_service(tmp_path: Path,
                                                               guest_root: Path) -> None:
    init = start_init(guest_root, tmp_path / "absent.sock", "sleep 1000")
    try:
        wait_until(lambda: len(children_of(init.pid)) == 1, timeout=10)
        assert not (guest_root / "etc/hostname").exists()
        assert not (guest_root / "home/debian/.ssh").exists()
    finally:
        code, err = stop(init)
    assert code == 0
    assert "no metadata socket" in err
