"""``python -m benchmarks``: see :func:`benchmarks.runner.main`."""

from .runner import main

main()
