"""SD-1.5's architecture, lecture §5: figures 1–2 from torchview, Θ counted twice, sizes in and out,
and the U-Net of 2015 (Remark 5.1). Everything runs on the meta device: no weights, a few seconds."""
import re
import xml.etree.ElementTree as ET

import pytest
import torch

from sdanatomy.ledger import registry
from sdanatomy.pages import architecture
from sdanatomy.pages import architecture_sizes
from sdanatomy.pages import diagrams
from sdanatomy.lecture import config
from sdanatomy import sd15

# ---------------------------------------------------------------- figures 1–2 (torchview)
FIG1_BLOCKS = ["TimestepEmbedding", "Conv2d"] + ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D",
               "UNetMidBlock2DCrossAttn", "UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3 + ["GroupNorm", "SiLU", "Conv2d"]
FIG2_BLOCKS = ["Conv2d", "UNetMidBlock2D"] + ["UpDecoderBlock2D"] * 4 + ["GroupNorm", "SiLU", "Conv2d"]


def _modules(nodes):
    return [n for n, inp, _ in nodes if inp and n not in ("expand", "to", "Timesteps")]


def test_figure1_is_the_unet_at_depth_1():
    nodes = diagrams.figure_nodes("fig1_unet")
    assert [shape for name, _, shape in nodes if name == "input-tensor"] == ["(1, 4, 64, 64)", "(1,)", "(1, 77, 768)"]
    assert _modules(nodes) == FIG1_BLOCKS
    assert nodes[-1] == ("output-tensor", "", "(1, 4, 64, 64)")
    mid = next(n for n in nodes if n[0] == "UNetMidBlock2DCrossAttn")
    assert mid[2] == "(1, 1280, 8, 8)"                                 # 64 / 2³ at the bottleneck


def test_figure2_is_the_decoder_at_depth_1():
    nodes = diagrams.figure_nodes("fig2_vae_decoder")
    assert nodes[0] == ("input-tensor", "", "(1, 4, 64, 64)")
    assert _modules(nodes) == FIG2_BLOCKS
    assert nodes[-1] == ("output-tensor", "", "(1, 3, 512, 512)")


def test_torchview_svgs_are_written_reproducible_and_name_the_blocks(tmp_path):
    first = diagrams.write_torchview_figures(tmp_path / "a")
    second = diagrams.write_torchview_figures(tmp_path / "b")
    assert [p.name for p in first] == [f"{n}.svg" for n in diagrams.TORCHVIEW_FIGURES]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two runs"
        svg = a.read_text()
        ET.fromstring(svg.encode())                                       # well-formed
        assert "graphviz version" not in svg and not re.search(r"0x[0-9a-f]{6,}", svg)
        assert diagrams.svg_digest(svg) == diagrams.dot_digest(a.stem)
    fig1 = (tmp_path / "a" / "fig1_unet.svg").read_text()
    fig2 = (tmp_path / "a" / "fig2_vae_decoder.svg").read_text()
    for name in FIG1_BLOCKS:
        assert f">{name}</text>" in fig1
    assert fig1.count(">CrossAttnDownBlock2D</text>") == 3 and fig1.count(">CrossAttnUpBlock2D</text>") == 3
    assert fig2.count(">UpDecoderBlock2D</text>") == 4 and "(1, 3, 512, 512)" in fig2


@pytest.mark.parametrize("name", list(diagrams.TORCHVIEW_FIGURES))
def test_book_figures_draw_the_current_graph(name):
    # The committed SVG carries the digest of the DOT graph it was drawn from; torchview's graph of
    # today's modules must be the same (graphviz and fonts may differ between machines, the graph not).
    path = diagrams.figures_dir() / f"{name}.svg"
    assert path.is_file(), "run sdanatomy.diagrams.write_torchview_figures()"
    assert diagrams.svg_digest(path.read_text()) == diagrams.dot_digest(name)


def test_unknown_torchview_figure():
    with pytest.raises(ValueError, match="unknown figure"):
        diagrams.render_svg("fig9")


# ---------------------------------------------------------------- Θ by formula and by counting
@pytest.mark.parametrize("component", ["unet", "vae"])
def test_parameter_table_formula_equals_module_and_published(component):
    t = architecture.parameter_counts(component)
    for r in t.rows:
        assert r.by_formula == r.in_module, f"{r.block}: formula {r.by_formula:,} ≠ module {r.in_module:,}"
    assert t.total_formula == architecture.PUBLISHED[component] == {"unet": 859_520_964, "vae": 83_653_863}[component]
    assert t.total_module == t.whole_module == architecture.PUBLISHED[component]   # no block left out
    assert t.all_equal and architecture.parameter_table(component).all_ok


def test_block_rows_are_the_lectures_blocks():
    unet = [r.block for r in architecture.parameter_counts("unet").rows]
    assert unet == (["time_proj", "time_embedding", "conv_in"] + [f"down_blocks.{i}" for i in range(4)]
                    + ["mid_block"] + [f"up_blocks.{i}" for i in range(4)] + ["conv_norm_out", "conv_out"])
    vae = architecture.parameter_counts("vae")
    decoder_side = sum(r.by_formula for r in vae.rows
                       if r.block == "post_quant_conv" or r.block.startswith("decoder."))
    assert decoder_side == 49_490_199


def test_formula_side_never_builds_a_module(monkeypatch):
    # The formula side reads the configuration only: with the builders broken it still counts.
    def broken(*a, **k):
        raise AssertionError("the formula side built a module")
    monkeypatch.setattr(sd15, "build_unet", broken)
    monkeypatch.setattr(sd15, "build_vae", broken)
    assert sum(n for _, terms in architecture.unet_parts() for _, n in terms) == 859_520_964
    assert sum(n for _, terms in architecture.vae_parts() for _, n in terms) == 83_653_863


def test_formulas_by_hand():
    A = architecture
    assert A.conv2d_params(4, 320, 3) == 9 * 4 * 320 + 320 == 11_840               # conv_in
    assert A.resnet_params(320, 640, 1280, shortcut=True) == (
        2 * 320 + 9 * 320 * 640 + 640 + 1280 * 640 + 640 + 2 * 640 + 9 * 640 * 640 + 640 + 320 * 640 + 640)
    C, d_c = 320, 768
    assert A.transformer_params(C, d_c) == 20 * C * C + 2 * d_c * C + 21 * C


def test_formulas_follow_the_configuration():
    from sdanatomy import miniature
    assert architecture.parameter_counts("unet", miniature.UNET_CONFIG).all_equal
    assert architecture.parameter_counts("vae", miniature.VAE_CONFIG).all_equal
    assert architecture.parameter_counts("unet", miniature.UNET_CONFIG).published is None
    with pytest.raises(ValueError, match="unsupported"):
        architecture.unet_parts({**config.UNET_CONFIG, "transformer_layers_per_block": 2})
    with pytest.raises(ValueError, match="component"):
        architecture.parameter_table("text_encoder")


def test_lecture_resnet_theta_is_larger():
    # Def. 6.15 lists Linear maps for γ(h) and β(h) and a shortcut whatever the widths; SD-1.5 has one
    # projection and a shortcut only when C_in ≠ C_out: the difference is d_t·C_out + C_out [+ C_in·C_out + C_out].
    for row in architecture.resnet_theta_table().rows:
        printed, formula, module, diff = (int(c.replace(",", "")) for c in row[1:])
        assert formula == module and printed - formula == diff
        C_in, C_out = map(int, re.search(r"\((\d+) → (\d+)\)", row[0]).groups())
        assert diff == 1280 * C_out + C_out + (C_in * C_out + C_out if C_in == C_out else 0)


def test_formula_table_examples_are_the_modules_counts():
    unet, vae = sd15.build_unet(weights="meta"), sd15.build_vae(weights="meta")
    t = architecture.formula_table()
    for block, formula, count, where in t.rows:
        module = (vae if where.startswith(("decoder.", "encoder.")) else unet).get_submodule(where)
        assert sd15.count_parameters(module) == int(count.replace(",", "")), block
    formulas = {r[0]: r[1] for r in t.rows}
    assert formulas["Conv2d k×k (C_in → C_out)"] == "C_in·C_out·k² + C_out"
    assert formulas["Transformer2DModel (C, context width d_ctx)"] == "20·C² + 2·C·d_ctx + 21·C"
    assert "\\(" in t._repr_html_()                                        # LaTeX for MathJax


def test_table_renders_as_text_and_escaped_html():
    t = registry.Table("T <1>", ["a", "n"], [["x<y", "1,000"], ["z", "7"]], notes=["note"])
    text = repr(t)
    assert text.splitlines()[3] == "x<y  1,000" and text.endswith("note")   # title, header, rule
    with pytest.raises(TypeError, match="table of facts"):
        t.all_ok
    with pytest.raises(ValueError, match="has 2 cells"):
        registry.Table("T", ["a", "n"], [["only one"]])
    assert "x&lt;y" in t._repr_html_() and "<caption>T &lt;1&gt;</caption>" in t._repr_html_()


# ---------------------------------------------------------------- §5.5 and Remark 5.2: sizes
@pytest.fixture(scope="module")
def latent_table():
    return architecture_sizes.latent_size_table()


def test_unet_returns_the_latent_size_and_decoder_eight_times(latent_table):
    for (H, W), row in zip(architecture_sizes.LATENT_SIZES, latent_table.rows):
        assert row[2] == f"4×{H}×{W}"                                      # U-Net: output = input size
        assert row[3] == f"3×{8 * H}×{8 * W}"                              # decoder: ×8 in each direction
        levels = list(zip(architecture_sizes.unet_levels(H), architecture_sizes.unet_levels(W)))    # ⌈·/2⌉ per level, by (14)
        assert row[1] == " → ".join(f"{h}×{w}" for h, w in levels)


def test_skip_sizes_are_needed_exactly_when_8_does_not_divide(latent_table):
    for (H, W), row in zip(architecture_sizes.LATENT_SIZES, latent_table.rows):
        divisible = H % 8 == 0 and W % 8 == 0
        assert (row[4] == "yes") == divisible
        assert (row[5] == "same output size") == divisible
        if not divisible:
            # Upsampling level ℓ+1 gives 2⌈H_ℓ/2⌉ rows, ≠ H_ℓ iff H_ℓ is odd; the first mismatch met on
            # the way up is at the deepest odd level ℓ ∈ {2, 1, 0}, concatenated in up_blocks.(3 − ℓ).
            odd = [lv for lv in (2, 1, 0) if architecture_sizes.unet_levels(H)[lv] % 2 or architecture_sizes.unet_levels(W)[lv] % 2]
            assert row[5].startswith(f"fails in up_blocks.{3 - odd[0]}: upsampled map has ")


def test_unet_levels_are_ceil_halves():
    assert architecture_sizes.unet_levels(65) == [65, 33, 17, 9] and architecture_sizes.unet_levels(1) == [1, 1, 1, 1]


def test_encoder_floors_and_loses_rows():
    rows = {r[0]: r for r in architecture_sizes.image_size_table().rows}
    assert rows["3×513×513"][1:] == ["4×64×64", "3×512×512", "no"]
    assert rows["3×520×520"][1:] == ["4×65×65", "3×520×520", "yes"]


def test_interface_fixes_channels_and_context_width_not_tokens():
    rows = architecture_sizes.interface_table().rows
    assert [r[2] for r in rows] == ["yes", "no", "no", "no", "yes", "yes", "yes", "no", "no"]
    assert [r[3] for r in rows if r[2] == "no"] == ["conv_in"] * 2 + [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] + ["post_quant_conv"] * 2
    assert rows[1][4].startswith("Given groups=1, weight of size [320, 4, 3, 3]")
    assert "but got 3 channels" in rows[1][4] and "but got 5 channels" in rows[2][4]
    assert rows[3][4].startswith("mat1 and mat2 shapes cannot be multiplied (77x1024 and 768x320)")
    assert rows[7][4].startswith("Given groups=1, weight of size [4, 4, 1, 1]")
    assert [r[4] for r in rows if r[2] == "yes"] == ["4×64×64"] * 3 + ["3×512×512"]


# ---------------------------------------------------------------- Remark 5.1: the U-Net of 2015
# Ronneberger et al. 2015, Fig. 1: the sizes printed beside each feature map (each conv listed).
PAPER_SIZES = [572, 570, 568, 284, 282, 280, 140, 138, 136, 68, 66, 64, 32, 30, 28,
               56, 54, 52, 104, 102, 100, 200, 198, 196, 392, 390, 388]


def test_unet2015_sizes_are_the_papers():
    stages = architecture_sizes.unet2015_sizes(572)
    ours = [H for _, _, H in stages]
    # the paper lists both convs of a level; ours lists the level after both: its sizes skip the middle one
    expected = [572] + [h for i, h in enumerate(PAPER_SIZES[1:], start=1) if i % 3 != 1]
    assert [h for name, _, h in stages if not name.startswith(("crop", "conv 1×1"))] == expected
    assert ours[-1] == 388 and stages[-1][:2] == ("conv 1×1", 2)
    with pytest.raises(ValueError, match="even"):
        architecture_sizes.unet2015_sizes(574)                                   # 570 → 285 would be pooled
    assert {H for H, _ in architecture_sizes.unet2015_tiles(600)} == {16 * n + 60 for n in range(8, 34)}


def test_unet2015_module_matches_sizes_and_formula():
    with torch.device("meta"):
        net = architecture_sizes.UNet2015()
    assert net(torch.empty(1, 1, 572, 572, device="meta")).shape == (1, 2, 388, 388)
    assert sd15.count_parameters(net) == architecture_sizes.unet2015_params() == 31_030_658
    # a small one, with values: every tile the size rule accepts runs, and gives the predicted size
    small = dict(widths=(4, 8, 16), in_channels=1, classes=2)
    torch.manual_seed(0)
    net = architecture_sizes.UNet2015(**small)
    assert sd15.count_parameters(net) == architecture_sizes.unet2015_params(**small)
    tiles = []
    for H in range(20, 80):
        try:
            tiles.append((H, architecture_sizes.unet2015_sizes(H, **small)[-1][2]))
        except ValueError:
            pass
    assert [H for H, _ in tiles[:3]] == [44, 48, 52]                      # 4n + 28 for two poolings
    with torch.no_grad():
        for H, out in tiles[:2]:
            assert net(torch.randn(1, 1, H, H)).shape == (1, 2, out, out)


def test_comparison_table_numbers():
    rows = {r[0]: r for r in architecture_sizes.comparison_table().rows}
    assert rows["parameters"][1].startswith("31,030,658") and rows["parameters"][2] == "859,520,964"
    assert "388×388" in rows["sizes"][1] and "65×47 → 65×47" in rows["sizes"][2]
    assert rows["skip connections"][1].startswith("4") and rows["skip connections"][2].startswith("12")
    assert rows["time input"][1] == rows["text input"][1] == "none"
    assert "22 ResnetBlock2D" in rows["time input"][2] and "16 transformer blocks" in rows["text input"][2]
