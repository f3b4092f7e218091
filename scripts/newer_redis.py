"""Build a redis-server that has XACKDEL (Redis 8.2 and later) and print
the directory that holds it.

Debian 12 ships Redis 7.0, which the test suite runs on. The transport uses
XACKDEL where the server has it, and that path needs a newer server to be
tested: this script takes the newest Redis source package of Debian's
experimental or unstable suite (the upstream tarball, its SHA-256 checked
against the suite's index, fetched over HTTPS), builds ``redis-server`` without
TLS, and keeps it under ``$XDG_CACHE_HOME/event-collector`` (``~/.cache``
by default), so that a second run only prints the path. Nothing of Redis
is kept in this repository.

    python3 scripts/newer_redis.py            # prints .../redis-8.6.3/bin
    PATH="$(python3 scripts/newer_redis.py):$PATH" pytest tests/test_redis_commands.py

It exits with status 1, saying why, when no suite has Redis 8.2 or later,
or when the download or the build fails.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

MIRROR = os.environ.get("DEBIAN_MIRROR", "https://deb.debian.org/debian")
SUITES = ("experimental", "unstable")
NEEDED = (8, 2)
"""The first Redis with XACKDEL."""


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
    return data


def version_of(text: str) -> tuple[int, ...]:
    """``5:8.6.3-1`` -> ``(8, 6, 3)``."""
    upstream = text.split(":", 1)[-1].rsplit("-", 1)[0]
    return tuple(int(part) for part in re.findall(r"\d+", upstream)[:3])


def newest() -> tuple[tuple[int, ...], str, str]:
    """The newest Redis source of the suites: version, tarball URL, SHA-256."""
    found: list[tuple[tuple[int, ...], str, str]] = []
    for suite in SUITES:
        index = lzma.decompress(
            fetch(f"{MIRROR}/dists/{suite}/main/source/Sources.xz")
        ).decode()
        for stanza in index.split("\n\n"):
            if not re.search(r"^Package: redis$", stanza, re.M):
                continue
            version = re.search(r"^Version: (\S+)$", stanza, re.M)
            folder = re.search(r"^Directory: (\S+)$", stanza, re.M)
            tarball = re.search(
                r"^ ([0-9a-f]{64}) \d+ (redis_[^ ]+\.orig\.tar\.(?:gz|xz))$",
                stanza,
                re.M,
            )
            if version and folder and tarball:
                url = f"{MIRROR}/{folder[1]}/{tarball[2]}"
                found.append((version_of(version[1]), url, tarball[1]))
    if not found:
        raise SystemExit("newer_redis: no suite has a redis source package")
    return max(found)


def build(url: str, sha256: str, target: Path) -> None:
    archive = fetch(url)
    digest = hashlib.sha256(archive).hexdigest()
    if digest != sha256:
        raise SystemExit(
            f"newer_redis: {url}: SHA-256 {digest}, the index says {sha256}"
        )
    with tempfile.TemporaryDirectory(prefix="ec-redis-") as work:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.11.4 and later
                tar.extractall(work, filter="data")
            else:  # a tarball whose checksum the archive's index gave
                tar.extractall(work)
        (source,) = Path(work).iterdir()
        jobs = str(os.cpu_count() or 2)
        made = subprocess.run(
            ["make", "-j", jobs, "BUILD_TLS=no"],
            cwd=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if made.returncode != 0:
            sys.stderr.write(made.stdout[-4000:])
            raise SystemExit(f"newer_redis: make failed (exit {made.returncode})")
        staging = target.with_name(target.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("redis-server", "redis-cli"):
            shutil.copy2(source / "src" / name, staging / name)
        staging.rename(target)


def main() -> None:
    version, url, sha256 = newest()
    shown = ".".join(map(str, version))
    if version[:2] < NEEDED:
        raise SystemExit(f"newer_redis: the newest redis in {SUITES} is {shown}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "event-collector" / f"redis-{shown}" / "bin"
    if not (target / "redis-server").exists():
        print(f"newer_redis: building Redis {shown} from {url}", file=sys.stderr)
        build(url, sha256, target)
    print(target)


if __name__ == "__main__":
    main()
