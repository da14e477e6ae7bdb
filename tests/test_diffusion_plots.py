"""Chapter 3's figures and animation (sdanatomy.pages.diffusion_plots), each checked
against a reference computed another way: numpy's closed forms, diffusers'
DDIMScheduler, the pixels of the frames."""
import base64
import re
from io import BytesIO

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from sdanatomy import miniature
from sdanatomy.lecture import diffusion
from sdanatomy.pages import diffusion_plots as dp
from sdanatomy.sd15.text_to_image import make_scheduler


def _alpha_bars(kind: str) -> np.ndarray:
    """ᾱ_t from the published β by numpy: DDPM's linear, SD-1.5's scaled linear."""
    if kind == "linear":
        betas = np.linspace(1e-4, 0.02, 1000)
    else:
        betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    return np.cumprod(1 - betas)


def test_forward_process_shows_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(2, 1, 8, 8, generator=g)
    ts = (0, 250, 999)
    fig = dp.forward_process(x0, diffusion.Schedule.linear(), ts, eps=eps)
    assert isinstance(fig, Figure)
    a = _alpha_bars("linear")
    grid = np.array(fig.axes[:2 * len(ts)]).reshape(2, len(ts))   # rows; then the bar
    for i in range(2):
        for j, t in enumerate(ts):
            want = np.clip(np.sqrt(a[t]) * x0[i, 0].numpy()
                           + np.sqrt(1 - a[t]) * eps[i, 0].numpy(), -1, 1)
            shown = np.asarray(grid[i, j].images[0].get_array())
            # float32 data against a float64 closed form: a few float32 roundings
            np.testing.assert_allclose(shown, want, rtol=1e-6, atol=1e-6)
    assert "250" in grid[0, 1].get_title() and "0.72" in grid[0, 1].get_title()


def test_schedules_plot_alpha_bar_and_log_snr():
    named = {"linear": diffusion.Schedule.linear(),
             "scaled": diffusion.Schedule.scaled_linear()}
    fig = dp.schedules(named)
    left, right = fig.axes
    for line_a, line_snr, kind in zip(left.get_lines(), right.get_lines(),
                                      ("linear", "scaled")):
        a = _alpha_bars(kind)
        # float64 both ways; the same 1000 products in the same order: round-off only
        np.testing.assert_allclose(line_a.get_ydata(), a, rtol=1e-12, atol=0)
        np.testing.assert_allclose(line_snr.get_ydata(), np.log(a / (1 - a)),
                                   rtol=1e-10, atol=1e-12)
    assert [ln.get_label() for ln in left.get_lines()][:2] == ["linear", "scaled"]


def test_guidance_grid_puts_each_digit_in_its_column():
    # image k of digit d is filled with (d + 10 k)/100: each cell is identifiable
    per_digit, asked = 3, torch.arange(10).repeat(3)               # 0…9, 0…9, 0…9
    images = torch.stack([torch.full((1, 4, 4), (int(d) + 10 * (n // 10)) / 100)
                          for n, d in enumerate(asked)])
    fig = dp.guidance_grid({1.0: images, 6.0: -images}, asked, per_digit=per_digit)
    assert [ax.get_title() for ax in fig.axes] == ["guidance w = 1", "guidance w = 6"]
    for ax, sign in zip(fig.axes, (1, -1)):
        grid = np.asarray(ax.images[0].get_array())
        assert grid.shape == (per_digit * 8, 10 * 8)       # 4 × 4 images, 2 px frames
        for d in range(10):
            for k in range(per_digit):
                cell = grid[8 * k:8 * k + 8, 8 * d:8 * d + 8]
                # exact: the values are copied, never computed
                value = sign * np.float32((d + 10 * k) / 100)
                np.testing.assert_allclose(cell[2:6, 2:6], value, rtol=0, atol=0)
                frame = np.ones((8, 8), bool)
                frame[2:6, 2:6] = False
                np.testing.assert_array_equal(cell[frame], -1.0)   # white background
    with pytest.raises(ValueError, match="samples of digit"):
        dp.guidance_grid({1.0: images}, asked, per_digit=4)


@pytest.fixture(scope="module")
def path():
    mini = miniature.load()
    prompts = [miniature.prompt(3), miniature.prompt(8)]
    return mini, prompts, miniature.trajectory(mini, prompts, guidance=3.0, seed=0)


def test_trajectory_is_diffusers_ddim_and_its_x0_is_diffusers_prediction(path):
    mini, prompts, p = path
    s = miniature.schedule()
    scheduler = make_scheduler("ddim")     # diffusers' DDIMScheduler, SD-1.5's settings
    scheduler.set_timesteps(50)
    assert p["t"].tolist() == scheduler.timesteps.tolist()
    # diffusers holds ᾱ in float32 (≈ 6e-5 relative after 1000 products); give it
    # ours, in float64, so that the check is on the step's formulas alone
    scheduler.alphas_cumprod = s.alpha_bars
    scheduler.final_alpha_cumprod = s.alpha_bars[0]
    nxt = list(p["z"][1:]) + [p["final"]]
    for k, t in enumerate(p["t"].tolist()):
        out = scheduler.step(p["eps"][k], t, p["z"][k], eta=0.0)
        # float32 latents of size ≲ 8; x̂_0 divides by √ᾱ_t ≥ 0.068:
        # ≲ 15 · 8 · 2⁻²³ ≈ 1.4e-5
        x0_diffusers = out.pred_original_sample
        torch.testing.assert_close(p["x0"][k], x0_diffusers, rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(nxt[k], out.prev_sample, rtol=1e-5, atol=2e-5)
    # the recorded run is generate's own: same noise, same images
    assert torch.equal(p["final_images"], miniature.generate(mini, prompts, seed=0))
    assert p["images"].shape == (50, 2, 1, 16, 16)


def _frames(html: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(BytesIO(base64.b64decode(f))))
            for f in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_animation_has_one_frame_per_step_plus_the_output_and_no_external_url():
    S, B = 4, 2
    g = torch.Generator().manual_seed(0)
    # values ±1 only: the grey map gives exactly white (−1) and black (+1)
    images = torch.randint(0, 2, (S, B, 1, 16, 16), generator=g).float() * 2 - 1
    final = -images[-1]
    s = diffusion.Schedule.scaled_linear()
    html = dp.ddim_animation(images, [981, 661, 341, 21], final, ["three", "eight"],
                             schedule=s, html_id="probe")
    assert f"new Array({S + 1})" in html
    frames = _frames(html)
    assert len(frames) == S + 1
    assert not re.search(r"https?://|<link", html), "the player must not fetch anything"
    assert "_anim_imgprobe" in html and not re.search(r"[0-9a-f]{32}", html)
    # the layout is pixel-exact: axis b's image starts at (top, gap + b·(4·16 + gap)),
    # each image pixel a 4 × 4 block; read the centre of every block
    top, gap = 26, 20
    for k, frame in enumerate(frames):
        assert frame.ndim == 2                       # grey PNG
        want = images[k] if k < S else final
        for b in range(B):
            left = gap + b * (64 + gap)
            centres = frame[top + 2:top + 64:4, left + 2:left + 64:4]
            expected = np.where(want[b, 0].numpy() > 0, 0, 255)   # gray_r: +1 black
            np.testing.assert_array_equal(centres, expected)
