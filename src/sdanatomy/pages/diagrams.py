"""Diagrams, lecture figures 1–4: computed, never drawn by hand.

Figures 1 and 2 (§5.3–5.4) are drawn as the lecture drew them: torchview at depth 1 on diffusers'
SD-1.5 modules, here built on the meta device (shapes, no weights), so a drawing takes about a second.
:func:`write_torchview_figures` writes them, and closer views of single blocks, as byte-for-byte
reproducible SVG stamped with the SHA-256 of the graph drawn (:func:`dot_digest`).

Figures 3 and 4 show which weight sits on which edge of a 1-D down- or upsampling layer. Here the
pattern is *measured*: for a layer y = f_θ(x) that is linear in x and in θ, the Jacobian ∂y/∂x at
θ = e_u (the u-th unit vector) is exactly the mixed derivative ∂²y/∂θ_u∂x, i.e. the coefficient of
θ_u on each edge x_i → y_m. :func:`weight_pattern` computes it with autograd; :func:`draw_weight_sharing`
draws the edges coloured by weight; :func:`write_figure` writes one of :data:`FIGURES` as SVG.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sdanatomy.lecture import layers

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")  # θ_0, θ_1, θ_2, …


# --- 1-D layers, built from sdanatomy.lecture.layers on a 1×n image ---------------------------------

def downsample_1d(theta: dict, x: torch.Tensor, *, stride: int = 2, padding: int = 0) -> torch.Tensor:
    """Downsample1D (figure 3): Conv2d (14) with a 1×k kernel on the 1×n image x. theta: weight (k,)."""
    kernel = {"weight": theta["weight"].reshape(1, 1, 1, -1)}          # (C_out, C_in, 1, k)
    y = layers.conv2d(kernel, x.reshape(1, 1, -1), stride=(1, stride), padding=(0, padding), bias=False)
    return y.reshape(-1)                                               # (1, 1, n') -> (n',)


def upsample_1d_transposed(theta: dict, x: torch.Tensor, *, n_out: int, stride: int = 2,
                           padding: int = 0) -> torch.Tensor:
    """Upsample1D (figure 4): the transposed convolution, x ↦ Jᵀx with J = ∂ downsample_1d / ∂z.

    "Transposed" literally: the adjoint of the strided Conv (14) on length n_out, computed by autograd
    (a vector–Jacobian product), which is how torch's conv_transpose1d is defined.
    """
    z = torch.zeros(n_out, dtype=x.dtype, requires_grad=True)
    y = downsample_1d(theta, z, stride=stride, padding=padding)
    (up,) = torch.autograd.grad(y, z, grad_outputs=x, create_graph=True)
    return up


def upsample_1d_nearest_conv(theta: dict, x: torch.Tensor, *, padding: int = 1) -> torch.Tensor:
    """SD-1.5's Upsample2D (24) in 1-D: Interpolate ×2 (23), then a stride-1 Conv (14) with padding p."""
    n = x.shape[-1]
    z = layers.interpolate_nearest(x.reshape(1, 1, n), size=(1, 2 * n))   # (1, 1, 2n): x_0 x_0 x_1 x_1 …
    kernel = {"weight": theta["weight"].reshape(1, 1, 1, -1)}
    return layers.conv2d(kernel, z, stride=1, padding=(0, padding), bias=False).reshape(-1)


# --- the measured weight-sharing pattern ------------------------------------------------------

def weight_pattern(layer, n_in: int, n_weights: int) -> torch.Tensor:
    """A[u, m, i] = ∂²y_m/∂θ_u∂x_i: the multiple of θ_u on edge x_i → y_m. (n_weights, n_out, n_in)"""
    x0 = torch.zeros(n_in, dtype=torch.float64)
    A = []
    for u in range(n_weights):
        theta = {"weight": torch.eye(n_weights, dtype=torch.float64)[u]}      # θ = e_u
        A.append(torch.autograd.functional.jacobian(lambda x: layer(theta, x), x0))
    return torch.stack(A)


def edges(A: torch.Tensor) -> list[tuple[int, int, tuple[int, ...]]]:
    """(i, m, (u, …)): each edge x_i → y_m and the weights θ_u that sit on it (0-based, as the figures)."""
    n_w, n_out, n_in = A.shape
    return [(i, m, tuple(u for u in range(n_w) if A[u, m, i] != 0))
            for m in range(n_out) for i in range(n_in) if A[:, m, i].any()]


def pattern_text(A: torch.Tensor) -> str:
    """The Jacobian ∂y/∂x written with the weights' names: row m is y_m, column i is x_i."""
    n_w, n_out, n_in = A.shape
    def cell(m, i):
        terms = [("" if A[u, m, i] == 1 else f"{A[u, m, i].item():g}") + f"θ{u}" for u in range(n_w) if A[u, m, i]]
        return "+".join(terms) or "·"
    cells = [[cell(m, i) for i in range(n_in)] for m in range(n_out)]
    width = max(len(c) for row in cells for c in row)
    head = "      " + " ".join(f"x{i}".rjust(width) for i in range(n_in))
    return "\n".join([head] + [f"y{m}".ljust(6) + " ".join(c.rjust(width) for c in row)
                               for m, row in enumerate(cells)])


# --- drawing ---------------------------------------------------------------------------------

def _positions(n: int, span: float) -> list[float]:
    return [(k + 0.5) * span / n for k in range(n)]


def draw_weight_sharing(A: torch.Tensor, *, title: str = ""):
    """A figure of the layer: inputs x_i below, outputs y_m above, one line per weight on each edge."""
    from matplotlib.figure import Figure
    n_w, n_out, n_in = A.shape
    span = float(max(n_in, n_out))
    xs_in, xs_out = _positions(n_in, span), _positions(n_out, span)
    fig = Figure(figsize=(1.0 + 0.85 * span, 2.6))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.84 if title else 0.96))
    used = sorted({u for _, _, us in edges(A) for u in us})
    for i, m, us in edges(A):
        for k, u in enumerate(us):                      # several weights on one edge: side by side
            shift = 0.1 * (k - (len(us) - 1) / 2)
            ax.plot([xs_in[i] + shift, xs_out[m] + shift], [0, 1], color=PALETTE[u], lw=2.2,
                    solid_capstyle="round", zorder=1)
    for xs, y, name in ((xs_in, 0, "x"), (xs_out, 1, "y")):
        for k, x in enumerate(xs):
            ax.scatter([x], [y], s=520, color="white", edgecolors="black", linewidths=1.2, zorder=2)
            ax.text(x, y, f"${name}_{{{k}}}$", ha="center", va="center", fontsize=11, zorder=3)
    for k, u in enumerate(used):                        # the legend: θ_u in its colour
        ax.plot([span + 0.25, span + 0.6], [0.75 - 0.25 * k] * 2, color=PALETTE[u], lw=2.2)
        ax.text(span + 0.7, 0.75 - 0.25 * k, f"$\\theta_{{{u}}}$", va="center", fontsize=11)
    ax.set_xlim(-0.3, span + 1.3)
    ax.set_ylim(-0.3, 1.3)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_svg(fig, path) -> Path:
    """Write ``fig`` as SVG, byte-for-byte reproducible (fixed hash salt, no date)."""
    import matplotlib
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.hashsalt": "sdanatomy", "svg.fonttype": "path"}):
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


# --- the book's figures ------------------------------------------------------------------------

# name: (layer, n_in, number of weights, title)
FIGURES = {
    "fig3_downsample1d": (lambda th, x: downsample_1d(th, x, stride=2, padding=0), 6, 2,
                          "Downsample1D: length 6 → 3, filter width 2, stride 2"),
    "fig4_upsample1d": (lambda th, x: upsample_1d_transposed(th, x, n_out=6, stride=2, padding=0), 3, 2,
                        "Upsample1D (transposed conv.): length 3 → 6, filter width 2, stride 2"),
    "fig3_sd15_downsample1d": (lambda th, x: downsample_1d(th, x, stride=2, padding=1), 6, 3,
                               "SD-1.5's Downsample2D in 1-D: width 3, stride 2, padding 1"),
    "fig4_sd15_upsample1d": (lambda th, x: upsample_1d_nearest_conv(th, x, padding=1), 3, 3,
                             "SD-1.5's Upsample2D in 1-D: nearest ×2, then width 3, padding 1"),
}


def figures_dir() -> Path:
    """book/figures of the repository when the package runs from it, else ./figures."""
    book = Path(__file__).resolve().parents[3] / "book"
    return book / "figures" if book.is_dir() else Path("figures")


def write_figure(name: str, out_dir=None) -> tuple[Path, torch.Tensor]:
    """Compute the weight pattern of FIGURES[name], draw it, write <out_dir>/<name>.svg; return (path, A)."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    layer, n_in, n_w, title = FIGURES[name]
    A = weight_pattern(layer, n_in, n_w)
    path = save_svg(draw_weight_sharing(A, title=title), Path(out_dir or figures_dir()) / f"{name}.svg")
    return path, A


# --- Remark 6.2: the timestep embedding as a picture -----------------------------------------

def timestep_heatmap(E: torch.Tensor, t: torch.Tensor):
    """E (T, 2R) as an image: rows t, columns the 2R components (cosines, then sines)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    R = E.shape[1] // 2
    im = ax.imshow(E.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                   extent=(-0.5, 2 * R - 0.5, float(t[-1]) + 0.5, float(t[0]) - 0.5))
    ax.axvline(R - 0.5, color="black", lw=0.8)
    ax.set_xlabel(f"component: cos ω_r t (r = 1…{R}) | sin ω_r t (r = 1…{R})")
    ax.set_ylabel("timestep t")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    return fig


# --- figures 1–2: torchview on SD-1.5's own modules (§5.3–5.4) ----------------------------------
FONT = "Helvetica,Arial,sans-serif"   # metric twins exist everywhere, so the boxes fit the text
LATENT, CONTEXT = (1, 4, 64, 64), (1, 77, 768)


@dataclass(frozen=True)
class TorchviewFigure:
    component: str   # "unet" or "vae"
    module: str      # submodule path, "" for the whole network
    inputs: dict     # forward's argument name -> shape (the timestep is int64, the rest float32)
    depth: int       # torchview's depth: 1 shows the module's children
    title: str
    options: tuple = ()   # further keyword arguments of forward, as (name, value) pairs


TORCHVIEW_FIGURES = {
    "fig1_unet": TorchviewFigure(
        "unet", "", dict(sample=LATENT, timestep=(1,), encoder_hidden_states=CONTEXT), 1,
        "Figure 1: UNet2DConditionModel, depth 1"),
    "fig1_unet_down_block": TorchviewFigure(
        "unet", "down_blocks.0", dict(hidden_states=(1, 320, 64, 64), temb=(1, 1280),
                                      encoder_hidden_states=CONTEXT), 1,
        "down_blocks.0 (CrossAttnDownBlock2D), depth 1"),
    "fig1_unet_resnet_block": TorchviewFigure(
        "unet", "down_blocks.1.resnets.0", dict(input_tensor=(1, 320, 32, 32), temb=(1, 1280)), 1,
        "down_blocks.1.resnets.0 (ResnetBlock2D, 320 → 640 channels), depth 1"),
    "fig1_unet_transformer": TorchviewFigure(
        "unet", "down_blocks.0.attentions.0", dict(hidden_states=(1, 320, 64, 64),
                                                   encoder_hidden_states=CONTEXT), 2,
        "down_blocks.0.attentions.0 (Transformer2DModel), depth 2",
        (("return_dict", False),)),   # as its block calls it (diffusers' output class warns otherwise)
    "fig2_vae_decoder": TorchviewFigure(
        "vae", "decoder", dict(sample=LATENT), 1, "Figure 2: the VAE's Decoder, depth 1"),
    "fig2_vae_mid_block": TorchviewFigure(
        "vae", "decoder.mid_block", dict(hidden_states=(1, 512, 64, 64)), 1,
        "decoder.mid_block (UNetMidBlock2D), depth 1"),
}


def torchview_graph(name: str):
    """torchview's ComputationGraph of ``TORCHVIEW_FIGURES[name]``, drawn from diffusers' SD-1.5 module
    built on the meta device (shapes only) and run once on meta inputs of the figure's shapes.

    torchview's own settings, as in the lecture, except the layout: no fixed ``size`` (it would shrink
    the drawing), closer nodes and ranks, and a sans-serif font (its default, Linux Libertine, is rarely
    installed, and a substitute with other widths overflows the boxes).
    """
    from torchview import draw_graph
    if name not in TORCHVIEW_FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(TORCHVIEW_FIGURES)}")
    from sdanatomy import sd15
    spec = TORCHVIEW_FIGURES[name]
    root = {"unet": sd15.build_unet, "vae": sd15.build_vae}[spec.component](weights="meta")
    module = root.get_submodule(spec.module) if spec.module else root
    inputs = {k: torch.empty(shape, device="meta", dtype=torch.int64 if k == "timestep" else torch.float32)
              for k, shape in spec.inputs.items()}
    graph = draw_graph(module, input_data=inputs, depth=spec.depth, device="meta", graph_name=name,
                       **dict(spec.options))
    dot = graph.visual_graph
    dot.graph_attr.pop("size", None)
    dot.graph_attr.update(nodesep="0.12", ranksep="0.3")
    dot.node_attr["fontname"] = dot.edge_attr["fontname"] = FONT
    return graph


def dot_digest(name: str) -> str:
    """SHA-256 of the figure's DOT source: what torchview saw, independent of graphviz and fonts."""
    return hashlib.sha256(torchview_graph(name).visual_graph.source.encode()).hexdigest()


def stamped_svg(dot, what: str) -> str:
    """``dot`` (a graphviz graph) as SVG text, graphviz's version comment replaced by ``what``
    was drawn and the SHA-256 of the DOT source (:func:`svg_digest` reads it back)."""
    digest = hashlib.sha256(dot.source.encode()).hexdigest()
    svg = dot.pipe(format="svg", encoding="utf-8")
    stamp = f"<!-- {what}; DOT sha256 {digest} -->"
    return re.sub(r"<!-- Generated by graphviz version.*?-->", stamp, svg, count=1, flags=re.S)


def render_svg(name: str) -> str:
    """The figure as SVG text; graphviz's version comment replaced by what was drawn and its digest."""
    dot = torchview_graph(name).visual_graph          # checks the name first
    spec = TORCHVIEW_FIGURES[name]
    return stamped_svg(dot, f"sdanatomy.diagrams {name}: torchview depth {spec.depth} of SD-1.5 "
                            f"{spec.component}{'.' + spec.module if spec.module else ''}")


def svg_digest(svg: str) -> str | None:
    """The DOT digest stamped into an SVG written by :func:`render_svg`."""
    m = re.search(r"DOT sha256 ([0-9a-f]{64})", svg)
    return m.group(1) if m else None


def write_torchview_figures(out_dir=None, names=None) -> list[Path]:
    """Write the figures of ``TORCHVIEW_FIGURES`` (all, or ``names``) to out_dir (book/figures) as SVG."""
    out = Path(out_dir or figures_dir())
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or TORCHVIEW_FIGURES:
        path = out / f"{name}.svg"
        path.write_text(render_svg(name), encoding="utf-8")
        paths.append(path)
    return paths


def figure_nodes(name: str) -> list[tuple[str, str, str]]:
    """The boxes of the figure, top to bottom as torchview numbers them: (name, inputs, outputs).

    Tensors have an empty ``inputs`` and their shape as ``outputs``; the text twin of the drawing.
    """
    source = torchview_graph(name).visual_graph.source
    nodes = []
    for label in re.findall(r"\[label=<(.*?)> fillcolor", source, flags=re.S):
        cells = [re.sub(r"<BR/>depth:\d+", "", c).strip() for c in re.findall(r"<TD[^>]*>(.*?)</TD>", label)]
        if len(cells) == 2:                                    # a tensor: name, shape
            nodes.append((cells[0], "", cells[1]))
        else:                                                  # a module or function
            nodes.append((cells[0], cells[2], cells[4]))
    return nodes
