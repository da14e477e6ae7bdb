"""The live page (book/live.md) in Chromium: the miniature generates in the browser,
from the site alone, and its numbers are PyTorch's.

The models are exported by ``python -m sdanatomy.miniature.export_onnx`` into
``book/_static/live`` (``make book`` does it); without them this test fails.

Tolerances, float32 on both sides: onnxruntime-web's wasm kernels sum each
convolution's and matmul's terms (≤ 576) in another order than PyTorch's; one U-Net call
then differs by ≲ 1e-6 on values of size ≤ 4 (EPS_ATOL = 1e-5, EPS_RTOL = 1e-4: a factor
of 10 of headroom). The 50 guided steps and the decoder repeat such differences through
a map that does not amplify them (observed: ≲ 1e-6 on the image); the image, in [0, 1],
is checked to IMAGE_ATOL = 1e-4, 1/40 of a grey level of the 8-bit canvas (a wrong
schedule, timestep or guidance formula moves pixels by 1e-2 or more).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

PAGE = "book/live.html"
FILES = ("unet.onnx", "text_encoder.onnx", "decoder.onnx", "miniature.json",
         "ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "precomputed.png")
EPS_ATOL, EPS_RTOL = 1e-5, 1e-4
IMAGE_ATOL = 1e-4
READY_MS = 60_000
GENERATE_MS = 120_000


@pytest.fixture(scope="module")
def live(site, browser):
    missing = [f for f in FILES if not (site / "_static" / "live" / f).is_file()]
    if missing or not (site / PAGE).is_file():
        pytest.fail(f"the live page or its model files are missing from {site} "
                    f"({missing}): make book exports them "
                    "(python -m sdanatomy.miniature.export_onnx)")
    tab = browser.context.new_page()
    errors: list = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: m.type == "error" and errors.append(m.text))
    tab.goto(browser.base + PAGE, wait_until="load")
    tab.wait_for_function("() => !document.getElementById('live-generate').disabled",
                          timeout=READY_MS)
    yield tab, errors
    tab.close()


@pytest.fixture(scope="module")
def model():
    from sdanatomy import miniature

    return miniature.load()


def press_generate(tab, prompt: str, *, python_noise: bool = False) -> float:
    tab.fill("#live-prompt", prompt)
    tab.set_checked("#live-python-noise", python_noise)
    tab.evaluate("() => { window.sdLive.last = null; }")
    start = time.perf_counter()
    tab.click("#live-generate")
    tab.wait_for_function("() => window.sdLive.last !== null"
                          " && !document.getElementById('live-generate').disabled",
                          timeout=GENERATE_MS)
    return time.perf_counter() - start


def canvas_pixels(tab) -> np.ndarray:
    """The image canvas read back: (16, 16) grey levels 0…255."""
    data = tab.evaluate("""() => { const c = document.getElementById('live-image');
        const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return Array.from(pixels.data); }""")
    rgba = np.array(data, dtype=np.uint8).reshape(16, 16, 4)
    return rgba[..., 0]


def test_a_handwritten_seven_shows_a_seven(live):
    from sdanatomy.miniature.digits import train_judge

    tab, errors = live
    seconds = press_generate(tab, "a handwritten seven")
    ms = tab.evaluate("() => window.sdLive.last.ms")
    print(f"\nbrowser generation, 50 steps with w = 3 and the x̂0 strip: {ms:.0f} ms "
          f"in the page ({seconds:.2f} s from the click to the drawn image)")
    grey = torch.tensor(canvas_pixels(tab), dtype=torch.float32) / 255 * 2 - 1
    judge = train_judge()
    assert judge.predict(grey[None, None]).tolist() == [7]
    assert tab.locator("#live-strip canvas").count() == 50
    assert tab.locator("#live-attn canvas").count() == 8
    assert errors == []


def test_the_browser_computes_what_pytorch_computes(live, model):
    from sdanatomy import miniature
    from sdanatomy.lecture.diffusion import ddim_timesteps

    tab, errors = live
    test = tab.evaluate("() => window.sdLive.meta.test")
    seconds = press_generate(tab, test["prompt"], python_noise=True)
    rec = tab.evaluate("""() => { const r = window.sdLive.last;
        return {image: Array.from(r.image), first: r.first, ms: r.ms}; }""")
    print(f"\nbrowser generation from PyTorch's noise: {rec['ms']:.0f} ms in the page "
          f"({seconds:.2f} s from the click)")
    # PyTorch, recomputed here: generate's image, and ε̂ of the first step on its noise
    image = (miniature.generate(model, test["prompt"], guidance=test["guidance"],
                                steps=test["steps"], seed=test["seed"]) + 1) / 2
    g = torch.Generator().manual_seed(test["seed"])
    noise = torch.randn(1, 4, 8, 8, generator=g)
    assert test["noise"] == noise.flatten().tolist()     # the noise the page was given
    t0 = rec["first"]["t"]
    assert t0 == ddim_timesteps(miniature.schedule(), test["steps"], 1)[0]
    eps_hat = miniature.EpsHat(model.unet, model.text_encoder).eval()
    with torch.no_grad():
        eps = eps_hat(noise.expand(2, -1, -1, -1), torch.tensor([t0, t0]),
                      miniature.tokenize(["", test["prompt"]]))
    for name, ref in (("uncond", eps[0]), ("cond", eps[1])):
        ours = np.array(rec["first"][name])
        err = np.abs(ours - ref.flatten().numpy()).max()
        print(f"ε̂ ({name}) at t = {t0}: max |browser − PyTorch| = {err:.1e}")
        np.testing.assert_allclose(ours, ref.flatten().numpy(),
                                   atol=EPS_ATOL, rtol=EPS_RTOL)
    ours = np.array(rec["image"])
    err = np.abs(ours - image.flatten().numpy()).max()
    print(f"final image: max |browser − PyTorch| = {err:.1e} (pixels in [0, 1])")
    np.testing.assert_allclose(ours, image.flatten().numpy(), atol=IMAGE_ATOL, rtol=0)
    assert errors == []


SNAPSHOT = """() => {
  const app = document.getElementById('live-app');
  const canvases = Array.from(app.querySelectorAll('canvas'), c => c.toDataURL());
  const error = document.getElementById('live-error');
  const html = Array.from(app.children).filter(e => e !== error).map(e => e.outerHTML);
  const inputs = Array.from(app.querySelectorAll('input'),
                            i => i.id === 'live-prompt' ? '' : i.value + i.checked);
  return {canvases, html, inputs};
}"""


def test_an_unknown_word_shows_a_message_and_changes_nothing_else(live):
    tab, errors = live
    if tab.evaluate("() => window.sdLive.last") is None:
        press_generate(tab, "the digit 3")
    before = tab.evaluate(SNAPSHOT)
    tab.fill("#live-prompt", "a handwritten cat")
    tab.click("#live-generate")
    error = tab.locator("#live-error")
    error.wait_for(state="visible", timeout=5_000)
    assert '"cat"' in error.inner_text()
    tab.wait_for_timeout(300)
    assert tab.evaluate(SNAPSHOT) == before
    assert errors == []


def test_bad_steps_show_a_message(live):
    tab, errors = live
    tab.fill("#live-prompt", "seven")
    tab.fill("#live-steps", "0")
    tab.click("#live-generate")
    error = tab.locator("#live-error")
    error.wait_for(state="visible", timeout=5_000)
    assert "from 1 to 100" in error.inner_text()
    tab.fill("#live-steps", "50")
    assert errors == []


def test_no_request_leaves_loopback(live, browser):
    assert browser.blocked == []
