"""The peers' virtual environments, made on demand under ``.venv-peers/``.

arq and taskiq-redis pin redis-py to versions that exclude each other
(and, at times, the one this project uses), so each peer runs from an
environment of its own, on the same Python as the suite, with this
checkout's ``benchmarks`` and ``src`` on ``PYTHONPATH`` (the processes
import the suite's shared timing code, which imports event_collector).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

from ._processes import ROOT, Interpreter

__all__ = ["PEERS", "Peer", "peer_interpreter"]

VENVS = ROOT / ".venv-peers"

# What event_collector needs to import (the shared timing code imports the
# benchmarks package, which imports it), and uvloop for --loop uvloop.
_COMMON = ("structlog", "typing_extensions", "uvloop", "hiredis")


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """One peer: its side's name, the packages it runs on, and the ones
    whose versions are worth reporting."""

    side: str
    label: str
    packages: tuple[str, ...]
    reported: tuple[str, ...]


PEERS: tuple[Peer, ...] = (
    Peer("taskiq", "taskiq-redis", ("taskiq-redis",), ("taskiq-redis", "taskiq")),
    Peer("arq", "arq", ("arq",), ("arq",)),
)


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _versions(python: Path, names: tuple[str, ...]) -> dict[str, str] | None:
    """The installed versions of ``names`` (and redis) in ``python``'s
    environment, if it runs the suite's Python and has them all."""
    probe = (
        "import json, sys, importlib.metadata as m; "
        "print(json.dumps([list(sys.version_info[:2]), "
        "{n: m.version(n) for n in sys.argv[1:]}]))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", probe, *names, "redis"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    version, found = json.loads(out)
    if tuple(version) != sys.version_info[:2]:
        return None
    return dict(found)


@functools.cache
def peer_interpreter(peer: Peer) -> Interpreter:
    """The interpreter of ``peer``'s environment, made (or remade, for
    another Python) if needed; once per process.

    :raises RuntimeError: the environment could not be made.
    """
    venv = VENVS / peer.side
    python = _python(venv)
    versions = _versions(python, peer.reported)
    if versions is None:
        print(f"redis: making {venv} for {peer.label} ...", file=sys.stderr)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                check=True,
                capture_output=True,
            )
            pip = [str(python), "-m", "pip", "install", "-q"]
            pip += ["--disable-pip-version-check", *peer.packages, *_COMMON]
            subprocess.run(pip, check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"could not make {venv}: {detail}") from None
        versions = _versions(python, peer.reported)
        if versions is None:
            raise RuntimeError(f"{venv} was made but does not run {peer.label}")
    print(
        f"redis: peer {peer.label} from {venv}: "
        + ", ".join(f"{n} {v}" for n, v in versions.items()),
        file=sys.stderr,
    )
    return Interpreter(str(python), (ROOT, ROOT / "src"))
