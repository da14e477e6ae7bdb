"""The skip diagram of chapter 8: SD-1.5's twelve skips, drawn from what diffusers does.

:func:`skip_graph` draws the list :func:`sdanatomy.sd15.wiring.skip_wiring` observed with
forward hooks: the down path as a column on the left (full resolution at the top), the up
path on the right (from the bottom up), the mid block below, and one horizontal arrow per
skip from the module that made it to the residual block that concatenates it. Because the
up path consumes the skips last-made-first, every arrow lands on its own row: a ladder.
:func:`write_figure` writes it as SVG, stamped with the SHA-256 of its DOT source.
"""
from __future__ import annotations

import re
from pathlib import Path

from sdanatomy.pages.diagrams import FONT, figures_dir, stamped_svg
from sdanatomy.sd15.wiring import Skip, skip_wiring, upsampling_blocks

__all__ = ["NAME", "skip_graph", "render_svg", "write_figure", "skip_table"]

NAME = "fig_unet_skips"
DOWN, UP, MID = "#dbe9f6", "#fde3cf", "#e5e5e5"     # fill colours of the three paths


def _node(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _label(name: str) -> str:
    """A two-line box label: the module path, shortened (down_blocks.0 -> down 0)."""
    short = name.replace("down_blocks.", "down ").replace("up_blocks.", "up ")
    short = short.replace(".resnets.", " · resnet ").replace(".attentions.", " · attention ")
    return short.replace(".downsamplers.0", " · downsample")


def skip_graph(skips: list[Skip] | None = None, *, ups: tuple[int, ...] | None = None):
    """The ladder of skips as a ``graphviz.Digraph`` (SD-1.5 at 64 × 64 by default)."""
    import graphviz
    skips = skip_wiring() if skips is None else skips
    ups = upsampling_blocks() if ups is None else ups
    made = list(reversed(skips))               # production order: conv_in first
    g = graphviz.Digraph(NAME, graph_attr=dict(rankdir="TB", nodesep="0.5", ranksep="0.18",
                                               splines="line", fontname=FONT))
    g.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="10",
           height="0.3", margin="0.08,0.03")
    g.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.6")
    for k, s in enumerate(made):
        C, H, W = s.shape
        with g.subgraph() as row:
            row.attr(rank="same")
            row.node(_node(s.producer), _label(s.producer), fillcolor=DOWN)
            row.node(_node(s.consumer), _label(s.consumer), fillcolor=UP)
        g.edge(_node(s.producer), _node(s.consumer), label=f" {C}×{H}×{W} ",
               color="#555555")
        if k:                                  # the down path, one row to the next
            g.edge(_node(made[k - 1].producer), _node(s.producer), weight="10")
            # the up path runs upwards: drawn from the row above, arrow reversed
            above = _node(made[k - 1].consumer)
            i = int(s.consumer.split(".")[1])
            upsampled = s.consumer.endswith("resnets.2") and i in ups
            g.edge(above, _node(s.consumer), dir="back", weight="10",
                   label=" ×2 " if upsampled else "", fontcolor="#aa3300")
    g.node("mid", "mid_block (resnet · attention · resnet)", fillcolor=MID)
    g.edge(_node(made[-1].producer), "mid", weight="10")
    g.edge(_node(made[-1].consumer), "mid", dir="back", weight="10")
    return g


def render_svg(skips: list[Skip] | None = None) -> str:
    """The diagram as SVG text, stamped with its DOT digest (read by diagrams.svg_digest)."""
    return stamped_svg(skip_graph(skips), f"sdanatomy.pages.skips {NAME}: SD-1.5's U-Net "
                                          f"skips observed by forward hooks")


def write_figure(out_dir=None, skips: list[Skip] | None = None) -> Path:
    """Write <out_dir>/fig_unet_skips.svg (book/figures by default); return its path."""
    path = Path(out_dir or figures_dir()) / f"{NAME}.svg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_svg(skips), encoding="utf-8")
    return path


def skip_table(skips: list[Skip]) -> str:
    """The text twin of the diagram: one line per skip, in the order the up path reads them."""
    lines = [f"{'made by':<30} {'read by':<24} (C, H, W)"]
    lines += [f"{s.producer:<30} {s.consumer:<24} {s.shape}" for s in skips]
    return "\n".join(lines)
