"""Chapter 3's figures (lecture §3.1): the forward process, two noise schedules,
guidance, and an animation of what DDIM predicts at each step.

Each figure function returns a ``matplotlib.figure.Figure`` built without pyplot. The
animation function returns the HTML of matplotlib's JavaScript player, made fit for an
offline page whose stored output reproduces (no external stylesheet, a fixed id).
"""
from __future__ import annotations

import base64
import re
from io import BytesIO
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from matplotlib.animation import FuncAnimation, HTMLWriter
from matplotlib.figure import Figure
from PIL import Image

from sdanatomy.lecture import diffusion

GREY = dict(cmap="gray_r", vmin=-1.0, vmax=1.0, interpolation="nearest")


def forward_process(x0: torch.Tensor, schedule: diffusion.Schedule,
                    ts=(0, 50, 100, 250, 500, 999), *,
                    eps: torch.Tensor | None = None, seed: int = 0) -> Figure:
    """x_t ~ q(x_t | x_0) in closed form (§3.1, the ζ of (6)) for each t in ``ts``.

    x0: (B, 1, H, W) clean images in [−1, 1], one row each; one column per t. The same ε
    (drawn with ``seed`` unless given, shape of x0) serves every column, so a row shows
    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε sliding from the image to that one noise. Grey scale
    clipped to the data's range [−1, 1].
    """
    if eps is None:
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed),
                          dtype=x0.dtype)
    B = x0.shape[0]
    fig = Figure(figsize=(1.1 * len(ts) + 1.1, 1.1 * B + 0.5), layout="constrained")
    axes = fig.subplots(B, len(ts), squeeze=False)
    for j, t in enumerate(ts):
        xt = diffusion.q_sample(schedule, x0, torch.full((B,), t), eps)   # (B, 1, H, W)
        a = schedule.alpha_bars[t].item()
        root = rf"$\sqrt{{\bar\alpha_t}}$ = {a ** 0.5:.2f}"
        axes[0, j].set_title(f"$t$ = {t}\n{root}", fontsize=9)
        for i in range(B):
            image = axes[i, j].imshow(xt[i, 0].clamp(-1, 1).numpy(), **GREY)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    bar = fig.colorbar(image, ax=axes, shrink=0.7, ticks=[-1, 0, 1])
    bar.set_label("pixel value\n(clipped to [−1, 1])", fontsize=8)
    return fig


def log_snr(schedule: diffusion.Schedule) -> torch.Tensor:
    """ln SNR_t = ln(ᾱ_t / (1 − ᾱ_t)), the signal-to-noise ratio of x_t in (6)'s ζ."""
    a = schedule.alpha_bars
    return torch.log(a / (1 - a))


def schedules(named: dict[str, diffusion.Schedule]) -> Figure:
    """ᾱ_t (left) and ln SNR_t (right) against t for each named schedule (§3.1, (6)).

    The dotted line marks ᾱ_t = 1/2, SNR = 1: signal and noise of equal variance.
    """
    fig = Figure(figsize=(8.5, 3.0))
    left, right = fig.subplots(1, 2)
    for name, s in named.items():
        t = torch.arange(s.T)
        left.plot(t.numpy(), s.alpha_bars.numpy(), label=name)
        right.plot(t.numpy(), log_snr(s).numpy(), label=name)
    left.axhline(0.5, color="grey", lw=0.8, ls=":")
    right.axhline(0.0, color="grey", lw=0.8, ls=":")
    left.set(xlabel="timestep $t$", ylabel=r"$\bar\alpha_t$", ylim=(0, 1.02),
             title=r"$\bar\alpha_t$, the image's share of $x_t$'s variance")
    right.set(xlabel="timestep $t$", title="log signal-to-noise ratio",
              ylabel=r"$\ln(\bar\alpha_t / (1 - \bar\alpha_t))$")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _digit_grid(images: torch.Tensor, asked: torch.Tensor, per_digit: int, *,
                pad: int = 2) -> torch.Tensor:
    """The first ``per_digit`` images of each digit 0–9: a row per sample, a column per
    digit, each image framed by ``pad`` pixels of background (−1, white in gray_r).

    images: (B, 1, H, W), asked: (B,) -> (per_digit·(H + 2 pad), 10·(W + 2 pad))
    """
    H, W = images.shape[-2:]
    framed = torch.nn.functional.pad(images[:, 0], (pad,) * 4, value=-1.0)
    columns = []
    for d in range(10):
        of_d = framed[asked == d][:per_digit]              # (per_digit, H + 2p, W + 2p)
        if len(of_d) < per_digit:
            raise ValueError(f"{per_digit} samples of digit {d} asked for; "
                             f"got {len(of_d)}")
        columns.append(of_d.reshape(per_digit * (H + 2 * pad), W + 2 * pad))
    return torch.cat(columns, dim=1)


def guidance_grid(by_w: dict[float, torch.Tensor], asked: torch.Tensor, *,
                  per_digit: int = 4) -> Figure:
    """Samples of each digit per guidance weight w, ε̃ = ε̂(∅) + w (ε̂(c) − ε̂(∅)).

    by_w: {w: images (B, 1, H, W) in [−1, 1]} generated for the digits ``asked`` (B,);
    one panel per w, a column per digit 0–9, ``per_digit`` samples down each column.
    """
    panel = 3.0 if len(by_w) > 1 else 5.0                    # inches per panel
    fig = Figure(figsize=(panel * len(by_w), panel * per_digit / 10 + 0.45),
                 layout="constrained")
    axes = fig.subplots(1, len(by_w), squeeze=False)[0]
    for ax, (w, images) in zip(axes, by_w.items()):
        grid = _digit_grid(images, asked, per_digit)      # (per_digit·(H+4), 10·(W+4))
        ax.imshow(grid.clamp(-1, 1).numpy(), **GREY)
        ax.set_title(f"guidance w = {w:g}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    return fig


def _offline_html(html: str, html_id: str) -> str:
    """matplotlib's player, fit for an offline page whose stored output reproduces.

    Drops the Font Awesome stylesheet that matplotlib links from a CDN (the book's
    theme ships Font Awesome) and replaces the random uuid of the element ids by
    ``html_id``.
    """
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*">\s*', "", html)
    ids = set(re.findall(r'id="_anim_img([0-9a-f]{32})"', html))
    if len(ids) != 1:
        raise ValueError(f"one animation expected in matplotlib's HTML; "
                         f"found {len(ids)}")
    return html.replace(ids.pop(), html_id)


class _GreyFrames(HTMLWriter):
    """matplotlib's HTML player, each frame a grey-scale PNG on one base64 line.

    The figures animated here are grey on white, and an 8-bit grey PNG takes about half
    the bytes of the RGBA one that HTMLWriter stores.
    """

    def grab_frame(self, **savefig_kwargs):
        rgba, grey = BytesIO(), BytesIO()
        self.fig.savefig(rgba, format="png", dpi=self.dpi, **savefig_kwargs)
        Image.open(rgba).convert("L").save(grey, format="png", optimize=True)
        frame = base64.b64encode(grey.getvalue()).decode("ascii")
        self._saved_frames.append(frame)


def _pixel_exact_row(B: int, W: int, *, dpi: int, scale: int = 4, gap: int = 20,
                     top: int = 26, bottom: int = 20):
    """A figure of B square axes of scale·W pixels each, placed on whole pixels.

    Each image pixel then covers exactly scale × scale screen pixels: sharp blocks, and
    frames that compress well (a few KB each).
    """
    side = scale * W
    width, height = B * side + (B + 1) * gap, side + top + bottom
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    axes = [fig.add_axes(((gap + i * (side + gap)) / width, bottom / height,
                          side / width, side / height)) for i in range(B)]
    return fig, axes


def ddim_animation(images: torch.Tensor, timesteps, final: torch.Tensor, labels, *,
                   schedule: diffusion.Schedule, dpi: int = 80, fps: int = 6,
                   html_id: str = "sdanatomy_ddim") -> str:
    """HTML of an animation: DDIM's prediction x̂_0 at each step, then the output.

    images: (S, B, 1, H, W) decoded x̂_0 = (z_t − √(1−ᾱ_t) ε̃)/√ᾱ_t at the S
    ``timesteps`` (§3.1, the x̂_0 of the DDIM step); final: (B, 1, H, W) the sampler's
    output, decoded; labels: B column titles. S + 1 frames of values in [−1, 1].
    """
    S, B = images.shape[:2]
    frames = [im[:, 0].clamp(-1, 1).numpy() for im in (*images, final)]
    fig, axes = _pixel_exact_row(B, images.shape[-1], dpi=dpi)
    shown = []
    for ax, label, first in zip(axes, labels, frames[0]):
        shown.append(ax.imshow(first, **GREY))
        ax.set_xlabel(label, fontsize=8, labelpad=2)
        ax.set_xticks([]), ax.set_yticks([])
    title = fig.suptitle("", fontsize=9)
    a = schedule.alpha_bars

    def draw(k):
        for artist, frame in zip(shown, frames[k]):
            artist.set_data(frame)
        if k < S:
            t = int(timesteps[k])
            title.set_text(rf"$\hat x_0$ at step {k + 1} of {S}: $t$ = {t}, "
                           rf"$\sqrt{{\bar\alpha_t}}$ = {a[t] ** 0.5:.2f}")
        else:
            title.set_text(r"the output $x_0$, decoded")
        return shown

    animation = FuncAnimation(fig, draw, frames=S + 1)
    with TemporaryDirectory() as folder:        # what to_jshtml does, with our writer
        path = Path(folder) / "animation.html"
        writer = _GreyFrames(fps=fps, embed_frames=True, default_mode="once")
        animation.save(path, writer, dpi=dpi)
        return _offline_html(path.read_text(), html_id)
