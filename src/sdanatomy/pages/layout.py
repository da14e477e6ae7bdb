"""The package's layers and its import graph, read from the source (CONTRIBUTING.md, "Layers").

The layers, lowest first, and what each may import of the package:

==============  =====================================================================
``lecture``     the lecture's definitions, torch alone: only ``lecture``
``sd15``        the SD-1.5 bridge, the one door to diffusers and transformers:
                ``lecture``, ``sd15``
``miniature``   the digits, the small networks and the trained miniature:
                ``lecture``, ``sd15``, ``miniature``
``ledger``      the checks: ``lecture``, ``sd15``, ``ledger``
``pages``       what only the pages need: anything
==============  =====================================================================

``sdanatomy`` itself and ``sdanatomy.offline`` are the base under all of them: the package's
``__init__`` imports ``offline`` alone, and ``offline`` imports nothing of the package.

:func:`import_graph` reads every ``import`` of every module, those inside functions too, from
the files' syntax trees (nothing is imported); :func:`violations` and :func:`cycles` are what
``tests/test_layout.py`` asserts empty; :func:`write_svg` draws the graph for CONTRIBUTING.md.
``python -m sdanatomy.pages.layout`` rewrites ``book/figures/import_graph.svg``.
"""
from __future__ import annotations

import ast
import hashlib
import subprocess
from pathlib import Path

PACKAGE = "sdanatomy"
LAYERS = ("lecture", "sd15", "miniature", "ledger", "pages")
MAY_IMPORT = {"lecture": {"lecture"}, "sd15": {"lecture", "sd15"},
              "miniature": {"lecture", "sd15", "miniature"}, "ledger": {"lecture", "sd15", "ledger"},
              "pages": set(LAYERS)}
BASE = {PACKAGE, f"{PACKAGE}.offline"}
REFERENCE_LIBRARIES = ("diffusers", "transformers", "huggingface_hub")   # only sd15 imports these
SOURCE = Path(__file__).resolve().parents[1]


def modules(root: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name ("sdanatomy.lecture.layers"), with its file."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def layer(module: str) -> str:
    """A module's layer: "lecture", …, "pages", or "base"."""
    if module in BASE:
        return "base"
    part = module.split(".")[1]
    if part not in LAYERS:
        raise ValueError(f"{module} is in no layer: put it under one of {LAYERS}")
    return part


def _imports(module: str, file: Path, known) -> tuple[set[str], set[str]]:
    """(the package's modules it imports, the top-level third-party names it imports)."""
    package = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
    ours, theirs = set(), set()
    for n in ast.walk(ast.parse(file.read_text())):
        if isinstance(n, ast.ImportFrom):
            base = ".".join(package[:len(package) - n.level + 1]) if n.level else ""
            target = ".".join(x for x in (base, n.module or "") if x)
            if target.split(".")[0] != PACKAGE:
                theirs.add(target.split(".")[0])
                continue
            for a in n.names:                       # `from pkg import mod` imports the module
                ours.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        elif isinstance(n, ast.Import):
            for a in n.names:
                (ours if a.name.split(".")[0] == PACKAGE else theirs).add(
                    a.name if a.name.split(".")[0] == PACKAGE else a.name.split(".")[0])
    # A package's __init__ may name its own parts (the ledger lists its row modules that way).
    ours = {m for m in ours if m != module and not m.startswith(module + ".")}
    return ours, theirs


def import_graph(root: Path = SOURCE) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    known = modules(root)
    return {m: _imports(m, f, known)[0] for m, f in known.items()}


def third_party(root: Path = SOURCE) -> dict[str, set[str]]:
    """module -> the top-level names of the other libraries it imports."""
    known = modules(root)
    return {m: _imports(m, f, known)[1] for m, f in known.items()}


def violations(root: Path = SOURCE) -> list[str]:
    """Every import that goes against the layers, and every reference library imported outside sd15."""
    out = []
    for m, targets in import_graph(root).items():
        for t in sorted(targets):
            if layer(m) == "base":
                if t not in BASE:
                    out.append(f"{m} (base) imports {t}")
            elif layer(t) != "base" and layer(t) not in MAY_IMPORT[layer(m)]:
                out.append(f"{m} ({layer(m)}) imports {t} ({layer(t)})")
    for m, libs in third_party(root).items():
        for lib in sorted(libs & set(REFERENCE_LIBRARIES)):
            if layer(m) != "sd15":
                out.append(f"{m} ({layer(m)}) imports {lib}: only sdanatomy.sd15 does")
    return out


def cycles(root: Path = SOURCE) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module (Tarjan)."""
    graph = import_graph(root)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def dot_source(root: Path = SOURCE) -> str:
    """The import graph in Graphviz's language: one row a layer, the lowest (lecture) at the
    bottom, arrows from the importing module to the imported one: every arrow points down or
    stays inside its row."""
    graph = import_graph(root)
    short = {m: m.removeprefix(PACKAGE + ".") or PACKAGE for m in graph}
    lines = ["digraph imports {", '  rankdir=TB; newrank=true; ranksep=0.9; nodesep=0.15;',
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica",'
             ' fontsize=11, height=0.3]; edge [color="#0000004d", arrowsize=0.5];']
    order = tuple(reversed(("base",) + LAYERS))             # pages first: drawn at the top
    for i, name in enumerate(order):
        members = sorted(m for m in graph if layer(m) == name)
        lines.append(f'  subgraph cluster_{name} {{ label="{name}"; labeljust=l; fontname="Helvetica"; '
                     f'fontsize=13; style="rounded,filled"; fillcolor="#f4f4f4"; color="#999999";')
        lines.append("    { rank=same; " + " ".join(f'"{short[m]}";' for m in members) + " }")
        lines.append("  }")
    for upper, lower in zip(order, order[1:]):               # keep the rows in layer order
        a = sorted(m for m in graph if layer(m) == upper)[0]
        b = sorted(m for m in graph if layer(m) == lower)[0]
        lines.append(f'  "{short[a]}" -> "{short[b]}" [style=invis, weight=10];')
    lines += [f'  "{short[m]}" -> "{short[t]}";' for m in sorted(graph) for t in sorted(graph[m])]
    return "\n".join(lines + ["}"]) + "\n"


def digest(root: Path = SOURCE) -> str:
    return hashlib.sha256(dot_source(root).encode()).hexdigest()


def write_svg(path: Path | str | None = None) -> Path:
    """Draw the graph with Graphviz's ``dot`` into ``path`` (default book/figures/import_graph.svg),
    stamped with the digest of its source so that a test can tell when it is out of date."""
    path = Path(path) if path is not None else SOURCE.parents[1] / "book" / "figures" / "import_graph.svg"
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_source(), capture_output=True, text=True,
                         check=True).stdout
    svg = svg.replace("<svg ", f"<!-- import graph sha256 {digest()} -->\n<svg ", 1)
    path.write_text(svg)
    return path


if __name__ == "__main__":
    print(write_svg())
