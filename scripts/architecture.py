"""Draw the package's module graph as an SVG for the architecture page.

    python scripts/architecture.py            # writes docs/_static/architecture.svg
    python scripts/architecture.py --check    # exits 1 if that file is stale

Each box is a module of ``event_collector`` (the command line, the demo and
the integrations left out); an arrow goes from a module to one it imports,
unless another path of arrows already leads there (the graph is reduced
transitively, so that its structure shows).
Modules sit in rows by how far they are from the leaves, so every arrow
points down: what a module needs is below it. The transport seam and its
implementations are shaded. The graph is read from the source with ``ast``,
``if TYPE_CHECKING:`` imports included, so the picture cannot drift from
the code: a test runs ``--check``.
"""

from __future__ import annotations

import ast
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "event_collector"
OUTPUT = ROOT / "docs" / "_static" / "architecture.svg"

LEFT_OUT = {
    *("__main__", "cli", "_cli_common", "_worker_cli", "_worker_run", "_top_cli"),
    *("_top_http", "_top_live", "_top_service", "_top_spark", "_top_view"),
    *("demo", "_demo_output", "_demo_flow"),
    *("health", "_health"),
    *("prometheus", "_prometheus_fleet", "_prometheus_registry"),
    "_prometheus_collectors",
    *("otel", "_otel_spans", "sender_context"),
    *("_compat", "types"),
}
"""Modules not drawn: the command line (``worker`` and ``top`` included), the
demo, integrations, shims."""

SEAM = {"transport", "transport.base", "transport.memory"}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 30, 18, 56, 20


def modules() -> dict[str, Path]:
    """Drawn modules by their name inside the package (``transport.base``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if parts and name not in LEFT_OUT:
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The drawn modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package.split(".") if package else []
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
        for target in (prefix, *(f"{prefix}.{a.name}".lstrip(".") for a in node.names)):
            if target in known and target != name:
                found.add(target)
    return found


def reduced(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` without the arrows another path already implies (a -> c
    when a -> b -> c), so that the picture shows the structure."""

    def below(node: str, seen: set[str]) -> set[str]:
        for target in graph[node]:
            if target not in seen:
                seen.add(target)
                below(target, seen)
        return seen

    return {
        node: {
            t
            for t in targets
            if not any(t in below(other, set()) for other in targets - {t})
        }
        for node, targets in graph.items()
    }


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Rows, top first: a module's row is the longest import chain below it."""
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            depth[node] = 0  # a cycle would stop here; the tests forbid one
            depth[node] = 1 + max((of(t) for t in graph[node]), default=-1)
        return depth[node]

    for node in graph:
        of(node)
    rows: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for node in sorted(graph):
        rows[depth[node]].append(node)
    rows.reverse()
    # Order each row by where the modules that import it sit in the rows
    # above (the barycentre), top down, then by its imports, bottom up: the
    # arrows cross less.
    for _ in range(2):
        for i in range(1, len(rows)):
            rows[i] = _by_barycentre(rows[i], rows[:i], graph, upward=True)
        for i in range(len(rows) - 2, -1, -1):
            rows[i] = _by_barycentre(rows[i], rows[i + 1 :], graph, upward=False)
    return rows


def _by_barycentre(
    row: list[str], others: list[list[str]], graph: dict[str, set[str]], upward: bool
) -> list[str]:
    place = {name: x / max(len(r), 1) for r in others for x, name in enumerate(r)}

    def key(node: str) -> tuple[float, str]:
        if upward:
            linked = [
                place[n]
                for n, targets in graph.items()
                if node in targets and n in place
            ]
        else:
            linked = [place[t] for t in graph[node] if t in place]
        mean = sum(linked) / len(linked) if linked else row.index(node) / len(row)
        return (mean, node)

    return sorted(row, key=key)


def svg() -> str:
    known = modules()
    graph = reduced({name: imports(name, path, known) for name, path in known.items()})
    rows = layers(graph)
    width = max(len(r) for r in rows) * (BOX_W + GAP_X) - GAP_X + 2 * MARGIN
    height = len(rows) * (BOX_H + GAP_Y) - GAP_Y + 2 * MARGIN
    where: dict[str, tuple[float, float]] = {}
    for y, row in enumerate(rows):
        row_w = len(row) * (BOX_W + GAP_X) - GAP_X
        x0 = (width - row_w) / 2
        for x, name in enumerate(row):
            where[name] = (x0 + x * (BOX_W + GAP_X), MARGIN + y * (BOX_H + GAP_Y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        'font-family="sans-serif" font-size="12">',
        "<title>event_collector: modules and their imports</title>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
    ]
    for name in sorted(graph):
        x1, y1 = where[name]
        for target in sorted(graph[name]):
            x2, y2 = where[target]
            out.append(
                f'<line x1="{x1 + BOX_W / 2:.1f}" y1="{y1 + BOX_H:.1f}" '
                f'x2="{x2 + BOX_W / 2:.1f}" y2="{y2:.1f}" stroke="#99a" '
                'stroke-width="1" marker-end="url(#head)"/>'
            )
    for name, (x, y) in sorted(where.items()):
        fill = "#fde9c4" if name in SEAM else "#e4ecf7"
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="5" fill="{fill}" stroke="#334"/>'
            f'<text x="{x + BOX_W / 2:.1f}" y="{y + BOX_H / 2 + 4:.1f}" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    drawn = svg()
    if argv == ["--check"]:
        if not OUTPUT.exists() or OUTPUT.read_text() != drawn:
            print(f"{OUTPUT} is stale: run python scripts/architecture.py")
            return 1
        return 0
    OUTPUT.write_text(drawn)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
