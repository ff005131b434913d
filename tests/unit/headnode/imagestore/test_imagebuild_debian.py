"""The Debian image builder: its inputs, cache key, staging and manifest, and one real build
with mmdebstrap (once per machine: the image cache keeps it for every later run)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from headnode.imagebuild import BuildError, gzip_reproducibly, image_uuid
from headnode.imagebuild_debian import (
    BASE_PACKAGES,
    INIT,
    MDATA_COMMANDS,
    agents_dir,
    build_debian_image,
    build_inputs,
    cache_key,
    guest_files,
    image_name,
    image_version,
    manifest_for,
    mmdebstrap_argv,
    run_mmdebstrap,
    stage_guest_files,
    unpacked_mib,
)
from schemas.agent import ImageFileSchema, ImageInitSchema
from tests.support.debian_image import debian_image, missing_builder

KEY = "ab" * 32


def test_cache_key_follows_every_input() -> None:
    files = guest_files()
    key = cache_key("bookworm", ["iproute2", "openssh-server"], files)
    assert key == cache_key("bookworm", ["openssh-server", "iproute2", "iproute2"], files)
    assert key != cache_key("trixie", ["iproute2", "openssh-server"], files)
    assert key != cache_key("bookworm", ["iproute2", "openssh-server", "curl"], files)
    changed = [(p, c + b"#" if p.endswith("sdc_init.py") else c, m) for p, c, m in files]
    assert key != cache_key("bookworm", ["iproute2", "openssh-server"], changed)
    assert build_inputs("bookworm", ["curl"])[0] == sorted({*BASE_PACKAGES, "curl"})


def test_guest_files_are_the_agent_packages_own() -> None:
    files = {path: (content, mode) for path, content, mode in guest_files()}
    source = agents_dir()
    assert files["usr/lib/sdc/agents/guest/sdc_init.py"][0] == (
        source / "guest/sdc_init.py").read_bytes()
    assert files["usr/lib/sdc/agents/backends/linux/mdata_client.py"][0] == (
        source / "backends/linux/mdata_client.py").read_bytes()
    assert files["usr/sbin/sdc-init"][1] == 0o755


@pytest.mark.parametrize("suite,include", [("Bookworm", []), ("a b", []), ("", []),
                                           ("bookworm", ["ok", "Bad"]),
                                           ("bookworm", ["x;rm"])])
def test_bad_inputs_are_refused(suite: str, include: list[str]) -> None:
    with pytest.raises(BuildError):
        build_inputs(suite, include)


def test_names_and_versions() -> None:
    assert image_name("bookworm") == "debian-12"
    assert image_name("sid") == "debian-sid"
    assert image_version("bookworm", KEY).startswith("12.0.")
    assert image_version("bookworm", KEY) != image_version("bookworm", "cd" * 32)
    assert len(image_version("sid", "f" * 64)) <= 64


def test_manifest_carries_init_tags_and_the_file() -> None:
    manifest = manifest_for("bookworm", KEY, "0" * 64, 1234, 200, ["openssh-server"])
    assert manifest["uuid"] == image_uuid("debian-12", "0" * 64)
    assert (manifest["os"], manifest["type"]) == ("linux", "lx-dataset")
    assert manifest["tags"] == {"default_user": "debian"}
    assert ImageInitSchema().load(manifest["init"])["args"] == ["/usr/sbin/sdc-init"]
    assert manifest["init"] == INIT and manifest["init"]["kind"] == "os"
    assert ImageFileSchema().load(manifest["files"][0])["size"] == 1234


def test_staged_tree(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir(mode=0o700)
    stage_guest_files(stage, guest_files())
    assert stage.stat().st_mode & 0o777 == 0o755
    assert (stage / "usr/sbin/sdc-init").stat().st_mode & 0o777 == 0o755
    for command in MDATA_COMMANDS:
        for directory in ("usr/sbin", "usr/bin"):
            link = stage / directory / f"mdata-{command}"
            assert os.readlink(link) == "/usr/lib/sdc/mdata-tool"
    argv = mmdebstrap_argv("bookworm", ["iproute2"], stage, tmp_path / "out.tar")
    assert argv[0] == "mmdebstrap" and argv[-2:] == ["bookworm", str(tmp_path / "out.tar")]
    assert f"--customize-hook=sync-in {stage} /" in argv


def test_unpacked_size_is_a_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("big")
        info.size = 3 << 20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    assert unpacked_mib(path) >= 4


def test_gzip_is_reproducible(tmp_path: Path) -> None:
    outs = []
    for _ in range(2):
        out = io.BytesIO()
        with open(__file__, "rb") as src:
            gzip_reproducibly(src, out, level=6)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    assert outs[0][3] & 0x08 == 0  # FNAME flag: no file name in the header
    assert gzip.decompress(outs[0]) == Path(__file__).read_bytes()


def test_mmdebstrap_missing_names_the_package(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="apt-get install mmdebstrap"):
        build_debian_image(tmp_path / "cache", use_cache=False)


def test_a_failed_build_reports_its_stderr_tail() -> None:
    failing = [sys.executable, "-c",
               "import sys\nfor i in range(100): print(f'I: step {i}', file=sys.stderr)\n"
               "print('E: no such package', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(BuildError) as err:
        run_mmdebstrap(failing, None)
    assert "exit 3" in str(err.value) and "E: no such package" in str(err.value)
    assert "I: step 99" in str(err.value) and "I: step 10\n" not in str(err.value)


# ---------------------------------------------------------------------------- a real build


@pytest.mark.skipif(missing_builder() is not None, reason=str(missing_builder()))
def test_the_built_image(tmp_path: Path) -> None:
    built = debian_image()
    again, reused = build_debian_image(built.file_path.parent.parent)
    assert reused and again.manifest == built.manifest
    assert built.manifest["name"] == "debian-12" and built.manifest["size_mb"] > 50
    with tarfile.open(built.file_path) as tar:
        members = {m.name.removeprefix("./"): m for m in tar}
        for path in ("usr/sbin/sdc-init", "usr/sbin/sshd", "usr/bin/python3",
                     "usr/lib/sdc/agents/guest/sdc_init.py", "usr/bin/ssh-keygen"):
            assert path in members, path
        for command in MDATA_COMMANDS:
            for directory in ("usr/sbin", "usr/bin"):
                assert members[f"{directory}/mdata-{command}"].linkname == (
                    "/usr/lib/sdc/mdata-tool")
        assert not [n for n in members if n.startswith("etc/ssh/ssh_host_")]
        passwd = tar.extractfile(members["etc/passwd"])
        assert passwd is not None
        assert any(line.startswith(b"debian:") for line in passwd.read().splitlines())
        if os.geteuid() != 0:
            return
        tar.extractall(tmp_path / "root", filter="fully_trusted")
    # python3-minimal in the image runs the guest files (their stdlib is all there)
    done = subprocess.run(["chroot", str(tmp_path / "root"), "/usr/sbin/mdata-get", "x"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr.startswith("mdata: ")) == (2, True), done.stderr
    done = subprocess.run(["chroot", str(tmp_path / "root"), "/usr/bin/python3", "-I", "-c",
                           "import sys; sys.path.insert(0, '/usr/lib/sdc'); "
                           "import agents.guest.sdc_init"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
