"""Benchmarks of event-collector against bare asyncio.

Run ``python -m benchmarks --help``. Each target runs in rounds; a round
measures the bare-asyncio baseline and then the library, each in a fresh
event loop, so that the two alternate. Medians of the rounds are reported
with their ratio, the Python version, the loop and the CPU count.
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
