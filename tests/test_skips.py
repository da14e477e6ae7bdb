"""Chapter 8's skip wiring: observed on diffusers' U-Net, checked against closed forms.

The expected values come from SD-1.5's configuration and the rounding rule of a stride-2
convolution with padding 1 (H -> ⌈H/2⌉), never from the code under test.
"""
import hashlib
import math
import re
import xml.etree.ElementTree as ET

import pytest

from sdanatomy.lecture.config import UNET_CONFIG
from sdanatomy.pages import skips as skip_figure
from sdanatomy.pages.diagrams import svg_digest
from sdanatomy.sd15.wiring import skip_wiring

WIDTHS = UNET_CONFIG["block_out_channels"]              # (320, 640, 1280, 1280)
N = UNET_CONFIG["layers_per_block"]                     # 2


@pytest.fixture(scope="module")
def seen():
    return skip_wiring(64, 64)


def test_twelve_skips_each_read_by_one_up_resnet(seen):
    L = len(WIDTHS)
    assert len(seen) == 1 + (N + 1) * (L - 1) + N == 12
    consumers = [s.consumer for s in seen]
    expected = [f"up_blocks.{i}.resnets.{j}" for i in range(L) for j in range(N + 1)]
    assert consumers == expected                         # every up resnet, in call order
    assert len({s.producer for s in seen}) == len(seen)  # no skip is read twice


def test_the_up_path_reads_the_skips_as_a_stack(seen):
    # production order of the down path: conv_in, then each level's resnet/attention
    # outputs and its downsampler (none at the lowest level)
    made = ["conv_in"]
    for ell, kind in enumerate(UNET_CONFIG["down_block_types"]):
        inner = "attentions" if kind.startswith("CrossAttn") else "resnets"
        made += [f"down_blocks.{ell}.{inner}.{r}" for r in range(N)]
        if ell < len(WIDTHS) - 1:
            made.append(f"down_blocks.{ell}.downsamplers.0")
    assert [s.producer for s in seen] == made[::-1]      # last made, first read


@pytest.mark.parametrize("H, W", [(64, 64), (17, 12)])
def test_skip_shapes_follow_the_widths_and_the_ceil_rule(H, W):
    for s in skip_wiring(H, W):
        if s.producer == "conv_in":
            ell, halvings = 0, 0
        else:
            ell = int(s.producer.split(".")[1])
            halvings = ell + ("downsamplers" in s.producer)
        h, w = H, W
        for _ in range(halvings):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert s.shape == (WIDTHS[ell], h, w), s


def test_bad_size_is_a_value_error():
    with pytest.raises(ValueError, match="height must be a positive integer"):
        skip_wiring(0, 64)


def test_the_book_figure_is_current(seen):
    committed = (skip_figure.figures_dir() / f"{skip_figure.NAME}.svg")
    assert committed.is_file(), "run the cell of chapter 8 that writes fig_unet_skips.svg"
    svg = committed.read_text()
    fresh = skip_figure.skip_graph(seen).source
    assert svg_digest(svg) == hashlib.sha256(fresh.encode()).hexdigest()
    ET.fromstring(svg.encode())                                      # well-formed
    # one drawn edge per skip carries its shape as a label
    labels = re.findall(r">\s*(\d+)×(\d+)×(\d+)\s*<", svg)
    assert sorted(tuple(map(int, x)) for x in labels) == sorted(s.shape for s in seen)
