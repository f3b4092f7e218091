"""Benchmarks of event-collector against bare asyncio.

Run ``python -m benchmarks --help``. Each target runs in rounds; a round
measures the bare-asyncio baseline and the library, each in a fresh event
loop, the baseline first in even rounds and the library first in odd ones.
Medians of the rounds are reported with their ratio, the Python version,
the loop and the CPU count.
"""

from .runner import Outcome, main, run_target
from .targets import FULL, QUICK, TARGETS, Sizes, Target

__all__ = [
    "FULL",
    "QUICK",
    "TARGETS",
    "Outcome",
    "Sizes",
    "Target",
    "main",
    "run_target",
]
