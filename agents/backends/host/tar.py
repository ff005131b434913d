"""GNU ``tar``: unpack an image's root filesystem, archive a machine's snapshot.

tar rather than Python's tarfile: it keeps device nodes, ownership, xattrs and hard links of
a root filesystem exactly, and refuses members that escape the target directory."""

from __future__ import annotations

from pathlib import Path

from agents.backends.host.cmd import run

TAR = "tar"
COMPRESSION_FLAGS = {"gzip": ["--gzip"], "bzip2": ["--bzip2"], "xz": ["--xz"], "none": []}


def extract(archive: Path, dest: Path, compression: str) -> None:
    run([TAR, "--extract", *COMPRESSION_FLAGS[compression], "--file", str(archive),
         "--directory", str(dest), "--numeric-owner", "--preserve-permissions", "--xattrs"],
        timeout=1800)


def create(source_dir: Path, archive: Path, compression: str = "gzip") -> None:
    run([TAR, "--create", *COMPRESSION_FLAGS[compression], "--file", str(archive),
         "--directory", str(source_dir), "--numeric-owner", "--xattrs", "."], timeout=1800)
