"""Provide a redis-server that has XACKDEL (Redis 8.2 and later) and
``XADD IDMP`` (8.6 and later), and print the directory that holds it.

Debian 12 ships Redis 7.0, which the test suite runs on. The transport uses
XACKDEL and IDMP where the server has them, and those paths need a newer
server to be tested. A build made before is used as it is, without the network: the
newest one under ``$XDG_CACHE_HOME/event-collector`` (``~/.cache`` by
default) that is 8.6 or later. Otherwise this script reads the source
indexes of Debian's experimental and unstable suites, takes the newest
Redis source package of 8.6 or later (the upstream tarball, its SHA-256
checked against the index, fetched over HTTPS; an older one when the
newest cannot be fetched), builds ``redis-server`` without TLS and keeps
it in that cache. Nothing of Redis is kept in this repository.

    bin=$(python3 scripts/newer_redis.py) &&
        PATH="$bin:$PATH" EVENT_COLLECTOR_REQUIRE_XACKDEL=1 \\
        EVENT_COLLECTOR_REQUIRE_IDMP=1 \\
        pytest tests/test_redis_commands.py

``--refresh`` looks for a newer source even when a build is cached. It
exits with status 1, saying why on one line, when no suite has Redis 8.6
or later, or when the download or the build fails.
"""

from __future__ import annotations

import argparse
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
import urllib.error
import urllib.request
from pathlib import Path

MIRROR = os.environ.get("DEBIAN_MIRROR", "https://deb.debian.org/debian")
SUITES = ("experimental", "unstable")
NEEDED = (8, 6)
"""The first Redis with both XACKDEL (8.2) and ``XADD IDMP`` (8.6)."""

Version = tuple[int, int, int]


def fail(message: str) -> SystemExit:
    return SystemExit(f"newer_redis: {message}")


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data: bytes = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise fail(f"{url}: {exc}") from None
    return data


def version_of(text: str) -> Version | None:
    """``5:8.6.3-1`` -> ``(8, 6, 3)``; ``None`` for a release candidate
    (``8.6~rc1``) or a version that is not three numbers."""
    upstream = text.split(":", 1)[-1].rsplit("-", 1)[0]
    found = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", upstream)
    if found is None:
        return None
    return int(found[1]), int(found[2]), int(found[3] or 0)


def shown(version: Version) -> str:
    return ".".join(map(str, version))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "event-collector"


def cached() -> Path | None:
    """The newest cached build of 8.6 or later, if there is one."""
    builds: list[tuple[Version, Path]] = []
    for folder in cache_root().glob("redis-*"):
        version = version_of(folder.name.removeprefix("redis-"))
        server = folder / "bin" / "redis-server"
        if version is not None and version[:2] >= NEEDED and server.exists():
            builds.append((version, folder / "bin"))
    return max(builds)[1] if builds else None


def sources() -> list[tuple[Version, str, str]]:
    """The suites' Redis sources of 8.6 or later, newest first: version,
    tarball URL, SHA-256."""
    found: list[tuple[Version, str, str]] = []
    for suite in SUITES:
        index = lzma.decompress(
            fetch(f"{MIRROR}/dists/{suite}/main/source/Sources.xz")
        ).decode()
        for stanza in index.split("\n\n"):
            if not re.search(r"^Package: redis$", stanza, re.M):
                continue
            text = re.search(r"^Version: (\S+)$", stanza, re.M)
            folder = re.search(r"^Directory: (\S+)$", stanza, re.M)
            tarball = re.search(
                r"^ ([0-9a-f]{64}) \d+ (redis_[^ ]+\.orig\.tar\.(?:gz|xz))$",
                stanza,
                re.M,
            )
            version = version_of(text[1]) if text else None
            if version and version[:2] >= NEEDED and folder and tarball:
                found.append(
                    (version, f"{MIRROR}/{folder[1]}/{tarball[2]}", tarball[1])
                )
    return sorted(set(found), reverse=True)


def build(url: str, sha256: str, target: Path) -> None:
    archive = fetch(url)
    digest = hashlib.sha256(archive).hexdigest()
    if digest != sha256:
        raise fail(f"{url}: SHA-256 {digest}, the index says {sha256}")
    with tempfile.TemporaryDirectory(prefix="ec-redis-") as work:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.11.4 and later
                tar.extractall(work, filter="data")
            else:  # a tarball whose checksum the archive's index gave
                tar.extractall(work)
        (source,) = Path(work).iterdir()
        made = subprocess.run(
            ["make", "-j", str(os.cpu_count() or 2), "BUILD_TLS=no"],
            cwd=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if made.returncode != 0:
            sys.stderr.write(made.stdout[-4000:])
            raise fail(f"make failed (exit {made.returncode})")
        staging = Path(tempfile.mkdtemp(prefix="bin-", dir=target.parent))
        for name in ("redis-server", "redis-cli"):
            shutil.copy2(source / "src" / name, staging / name)
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / "redis-server").exists():
                raise
            # Another run built the same version meanwhile: use that one.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--refresh", action="store_true", help="look for a newer source"
    )
    args = parser.parse_args()
    found = None if args.refresh else cached()
    if found is not None:
        print(f"newer_redis: using the build in {found}", file=sys.stderr)
        print(found)
        return
    missing = [tool for tool in ("make", "cc") if shutil.which(tool) is None]
    if missing:
        raise fail(f"building Redis needs {' and '.join(missing)} on PATH")
    candidates = sources()
    if not candidates:
        raise fail(f"no Redis 8.6 or later in Debian's {' or '.join(SUITES)}")
    errors: list[str] = []
    for version, url, sha256 in candidates:
        target = cache_root() / f"redis-{shown(version)}" / "bin"
        if (target / "redis-server").exists():
            print(target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"newer_redis: building Redis {shown(version)} from {url}", file=sys.stderr
        )
        try:
            build(url, sha256, target)
        except SystemExit as exc:
            errors.append(str(exc))
            print(exc, file=sys.stderr)
            continue
        print(target)
        return
    raise fail(f"no Redis could be built ({'; '.join(errors)})")


if __name__ == "__main__":
    main()
