"""The lecture's claims in prose, section by section, and what checks each.

The equation ledger checks the lecture's formulas. Around them the lecture also asserts
things in words: remarks, footnotes, figure captions, reasons ("so that…",
"because…"), statements about SD-1.5. Each :class:`Claim` paraphrases one of them and
says what checks it: rows of the ledger (``rows``, names as in
:func:`sdanatomy.ledger.entries`), or an executed cell of a chapter (``chapter``, a MyST
label of the book). Its verdict is

* ``"holds"`` — the check confirms it;
* ``"differs"`` — the check shows SD-1.5 doing otherwise (``reason``: what it does);
* ``"not checkable"`` — motivation, history, pedagogy, a plan or a bibliographic pointer
  (``reason``: why);
* ``"needs row"`` — checkable, but nothing checks it yet (``reason``: the check to add).

A "holds" claim may carry a ``reason`` too: a qualification of what was checked. The
numbered equations are not claims here: they are the ledger's rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from sdanatomy.ledger.registry import Table

VERDICTS = ("holds", "differs", "not checkable", "needs row")

# The lecture's sections, from its table of contents.
SECTIONS = ("1", "1.1", "1.2", "2", "3", "3.1", "3.2", "3.3", "4", "4.1", "4.2",
            "5", "5.1", "5.2", "5.3", "5.4", "5.5",
            "6", "6.1", "6.2", "6.3", "6.4", "6.5", "6.5.1", "6.5.2", "6.5.3", "6.6",
            "6.7", "6.8", "6.8.1", "6.9", "6.10", "6.11", "7", "7.1", "7.2",
            "8", "8.1", "8.2", "9", "10")


@dataclass(frozen=True)
class Claim:
    """One claim of the lecture's prose, paraphrased, and what checks it."""

    section: str
    claim: str
    rows: tuple[str, ...] = ()
    chapter: str | None = None
    verdict: str = "holds"
    reason: str = ""

    def __post_init__(self):
        if self.section not in SECTIONS:
            raise ValueError(f"no section {self.section!r} in the lecture: "
                             f"{self.claim!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}: {self.claim!r}")
        if self.verdict != "holds" and not self.reason.strip():
            raise ValueError(f"a {self.verdict!r} claim says why: {self.claim!r}")
        if self.verdict in ("holds", "differs") and not (self.rows or self.chapter):
            raise ValueError(f"a {self.verdict!r} claim names its check: "
                             f"{self.claim!r}")

    @property
    def checked_by(self) -> str:
        """The rows and the chapter, as one line of text."""
        parts = list(self.rows) + ([f"chapter: {self.chapter}"] if self.chapter else [])
        return "; ".join(parts) or "—"


# Row names used more than once.
CONV_STACK = "§4 one conv stack at many H×W, C fixed"
FLIP = "Remark 6.1 Conv2d = convolution with the flipped kernel"
UNET = "(85)–(91) UNet2DConditionModel"
DECODE = "(92)–(96) VAE decoder 𝒟 = AutoencoderKL.decode"
DEC_STAGES = "(92)–(96) decoder stages, as SD-1.5 runs them"
DEC_PRINTED = "(92)–(95) decoder stages as printed"
VAE_ATTN = "(93) mid-block self-attention (absent from Def. 8.2)"
LAYERNORM = "(69)–(72) LayerNorm inside the transformer (not in the lecture)"
GEGLU = "(69)–(72) GEGLU feed-forward (not in the lecture)"
LEVELS = "(83) Theorem 7.1: levels needed for R_unet ≥ W"
WHOLE_PATH = "(81) corrected, counted over SD-1.5's whole conv path"
SOFT = "(34)–(35) Proposition 6.1, per-query weighted sum"
LOOKUP = "Ex. 6.1 / Rem. 6.3 dictionary lookup"
HARD = "(51) hard-dictionary limit, k_{m*} = c q with c > 0"
IMAGE_SIZE = "(95)–(96) image size H = 2^{L_d − 1} H_z"
MEAN_SD = "(7)–(8) MeanEnc, SDEnc: the two halves of SD-1.5's encoder output"
EPSILON = "(6) SD-1.5's U-Net predicts ε: prediction_type 'epsilon'"
EQUIVARIANT = "§5.5 the U-Net commutes with shifts by multiples of 8 (circular padding)"
EQUIVARIANT_PRINTED = "§5.5 every layer translation-equivariant, as printed: any shift"
NAMES = "§6 function names, corrected: the library's own"
NAMES_PRINTED = "§6 function names, as printed: each a torch or diffusers name"
PATHS = "§6 footnotes, corrected: diffusers 0.42.1's files"
PATHS_PRINTED = "§6 footnotes, as printed: diffusers' file paths"
TORCH_MHA = "(31)–(33) torch.nn.MultiheadAttention, with SD-1.5's attn1 and attn2 Θ"
INNER = "(35) π(q) weighs keys by inner product ⟨q, k_m⟩, not by distance"
CLOSEST = "(34)–(35) soft dictionary weighs the closest key most, as printed (Ex. 6.1)"

CLAIMS = (
    # --- §1 introduction --------------------------------------------------------------
    Claim("1.1", "The course met the VAE three lectures earlier, the reverse "
          "diffusion process two lectures earlier, and distribution learning in the "
          "previous one.",
          verdict="not checkable",
          reason="the course's history, not a fact about SD-1.5"),
    Claim("1.1", "The reverse diffusion process generates latent images of low "
          "resolution, which the VAE decoder turns into images.",
          rows=(IMAGE_SIZE,),
          chapter="arch-sizes"),
    Claim("1.1", "The architectures of the original papers and those of actual "
          "implementations often differ.",
          chapter="arch-remark-5-1",
          reason="shown for the 2015 U-Net against SD-1.5's, and for the lecture's "
          "definitions in the errata; the LDM paper's text itself is not compared"),
    Claim("1.2", "Students will be able to describe the architectures, explain the "
          "variable sizes and explain the changes from the original proposals.",
          verdict="not checkable",
          reason="learning goals; §9 states them as results, and those claims are "
          "checked there"),
    # --- §2 notation ------------------------------------------------------------------
    Claim("2", "[1, k]_Z is {1, …, k} for finite k and the positive integers for k = "
          "+∞.",
          rows=("[1,k]_Z integer ranges",)),
    # --- §3 architectural freedom -----------------------------------------------------
    Claim("3.1", "The noise estimator's objective (6) is the same as in the previous "
          "lecture.",
          verdict="not checkable",
          reason="refers to another lecture of the course"),
    Claim("3.1", "The objective (6) does not depend on the network's architecture.",
          chapter="ch-freedom"),
    Claim("3.1", "Sampling only inserts the trained noise estimator into a "
          "sequential algorithm (DDPM or DDIM steps), whatever its architecture.",
          rows=("(6) DDPM ancestral step", "(6) DDIM step, η = 0 and η = 0.5"),
          chapter="freedom-samplers"),
    Claim("3.1", "DDIM's steps come from reference [1].",
          verdict="not checkable",
          reason="bibliographic, and a slip: [1] is DDPM (Ho et al. 2020); DDIM is "
          "Song, Meng and Ermon 2021, absent from the references"),
    Claim("3.2", "Training a VAE minimises a reconstruction error plus a regulariser "
          "that draws the posterior towards the origin.",
          rows=("(12) regularisation term = 2·KL",
                "(12) regularisation term = 2 × SD's VAE KL")),
    Claim("3.2", "The encoder's standard deviation σ is positive in every component.",
          rows=(MEAN_SD,),
          reason="SD-1.5 reads σ = exp(½·clamp(log σ², −30, 20)) off the encoder's "
          "moments: positive and finite for log σ² from −2000 to 2000 (without the "
          "clamp σ underflows to 0 below log σ² ≈ −1490 in float64)"),
    Claim("3.2", "Every term of the VAE objective (12) is independent of the "
          "architecture.",
          chapter="ch-freedom"),
    Claim("3.2", "Once trained, generating an image needs only the decoder.",
          rows=(DECODE,),
          chapter="fn-t2i",
          reason="SD-1.5 decodes z/0.18215 through post_quant_conv and the decoder; "
          "the encoder is never called"),
    Claim("3.3", "So both the noise estimator and the VAE decoder may use any "
          "architecture.",
          chapter="freedom-miniature"),
    # --- §4 variable sizes ------------------------------------------------------------
    Claim("4.1", "The output resolution depends on the user and cannot be fixed at "
          "training time.",
          verdict="not checkable",
          reason="a statement about how the model is used"),
    Claim("4.1", "The output image's size is chosen by choosing the latent's size.",
          rows=(IMAGE_SIZE,),
          chapter="arch-sizes"),
    Claim("4.2", "Variable sizes only need every layer to be a parametric function "
          "that is defined for every input size.",
          rows=(CONV_STACK,),
          chapter="vs-confirmed"),
    Claim("4.2", "The convolution, implemented as cross-correlation, is such a layer.",
          rows=(FLIP,),
          chapter="ch-variable-sizes"),
    Claim("4.2", "SD-1.5's noise estimator is a conditional U-Net with attention.",
          rows=(UNET,),
          chapter="ch-architecture"),
    Claim("4.2", "SD-1.5's VAE is built from convolutional layers as well.",
          rows=(DEC_STAGES,),
          chapter="ch-architecture"),
    # --- §5 overview ------------------------------------------------------------------
    Claim("5.1", "The U-Net starts from noise, which carries no information, and "
          "uses the text encoder's output to reach a globally coherent latent.",
          rows=(UNET,),
          chapter="fn-t2i"),
    Claim("5.1", "The VAE decoder turns a low-resolution latent that already has its "
          "layout into a high-resolution image by filling in the details.",
          rows=(IMAGE_SIZE,),
          chapter="fn-decoder"),
    Claim("5.1", "The intermediate states of a generation show the layout appearing "
          "before the details.",
          chapter="fn-t2i",
          reason="measured on the book's trained miniature, not on SD-1.5's weights"),
    Claim("5.1", "The U-Net's and the VAE's architectures differ, in line with their "
          "jobs.",
          chapter="ch-architecture",
          reason="the lecture writes 'VAE encoders'; it compares the decoder"),
    Claim("5.1", "Downsampling lets a pixel at one edge of the U-Net's input "
          "influence the opposite edge with relatively few layers.",
          rows=(LEVELS, WHOLE_PATH),
          chapter="receptive-sd15"),
    Claim("5.1", "The VAE encoder consists of pure convolutional and upsampling "
          "layers.",
          rows=(VAE_ATTN,),
          chapter="ch-architecture", verdict="differs",
          reason="an encoder downsamples: the sentence fits the decoder, and "
          "SD-1.5's decoder is not purely convolutional: its mid block has a "
          "self-attention over all latent positions, and GroupNorm throughout"),
    Claim("5.1", "The VAE confines its parameters to local transformations of values.",
          rows=(VAE_ATTN,),
          chapter="fn-decoder", verdict="differs",
          reason="every decoded pixel depends on every latent position, through "
          "GroupNorm's statistics and the mid block's attention (about 2 % of the "
          "decoder's parameters)"),
    Claim("5.2", "torchview draws the computation graph of the implemented model, "
          "which shows where the implementation departs from the paper.",
          chapter="ch-architecture"),
    Claim("5.2", "torchview lives at github.com/mert-kurttutan/torchview.",
          verdict="not checkable",
          reason="bibliographic: a web address, offline here. Checked by hand: the "
          "installed torchview 0.2.7 names it as its homepage and repository "
          "(importlib.metadata, Project-URL). A ledger row would only compare two "
          "strings and would check no definition of the lecture"),
    Claim("5.3", "Figure 1 shows SD-1.5's conditional U-Net with its downsampling, "
          "bottleneck, upsampling, skip connections and cross-attention.",
          chapter="ch-architecture"),
    Claim("5.3", "Figure 1 is torchview at depth 1 applied to the U-Net of SD-1.5 as "
          "published on Hugging Face.",
          chapter="ch-architecture",
          reason="redrawn from diffusers' module with SD-1.5's configuration (no "
          "weights needed for a graph)"),
    Claim("5.3", "Figure 1's tensor sizes are those of one latent with 4 channels "
          "and 64 × 64 pixels.",
          chapter="ch-architecture"),
    Claim("5.3", "Ronneberger et al.'s 2015 U-Net maps images to images, for medical "
          "image segmentation.",
          chapter="arch-remark-5-1",
          reason="from the paper; its sizes are recomputed and built in torch"),
    Claim("5.3", "A U-Net for image generation must also take the time (noise level) "
          "and the text as inputs.",
          rows=(UNET,),
          chapter="arch-remark-5-1"),
    Claim("5.3", "The U-Net predicts the noise (or v).",
          rows=(EPSILON,),
          reason="SD-1.5 predicts ε: its scheduler config has no prediction_type, "
          "so diffusers' DDIM and PNDM schedulers resolve it to 'epsilon', and "
          "DDIM's x̂₀ and step read the output as ε̂. v-prediction is another "
          "model family's (SD 2.x at 768 pixels), not SD-1.5's"),
    Claim("5.3", "SD's U-Net adds a time encoder and cross-attention layers to the "
          "2015 U-Net.",
          rows=("(29) TimestepEmbedding MLP",
                "(31)–(33) MultiheadAttention, SD-1.5 cross-attention"),
          chapter="arch-remark-5-1"),
    Claim("5.3", "Those two additions are the significant differences from the 2015 "
          "U-Net.",
          chapter="arch-remark-5-1", verdict="differs",
          reason="SD-1.5 also pads its convolutions instead of cropping, uses "
          "residual blocks with GroupNorm and SiLU, strided convolutions instead of "
          "max-pooling, nearest upsampling and a convolution, self-attention, and "
          "~28× the parameters"),
    Claim("5.4", "Figure 2 shows SD-1.5's VAE decoder, of convolutions, residual "
          "blocks and upsamplers, drawn by torchview at depth 1.",
          chapter="ch-architecture",
          reason="it is vae.decoder (AutoencoderKL.decode also runs "
          "post_quant_conv); its mid block's attention is in it too"),
    Claim("5.4", "Figure 2's tensor sizes are those of one latent with 4 channels "
          "and 64 × 64 pixels.",
          chapter="ch-architecture"),
    Claim("5.5", "The U-Net and the VAE decoder accept inputs of variable size.",
          rows=(CONV_STACK, IMAGE_SIZE),
          chapter="arch-sizes",
          reason="the U-Net doubles exactly only when 8 divides H and W; otherwise "
          "diffusers sizes each upsampling by its skip"),
    Claim("5.5", "This follows from every layer (convolution, normalisation, "
          "attention, up/down-sampling) being defined for any H × W.",
          rows=(CONV_STACK,),
          chapter="vs-confirmed"),
    Claim("5.5", "Every such layer is convolutional, i.e. equivariant to "
          "translations of H × W.",
          rows=(EQUIVARIANT, EQUIVARIANT_PRINTED),
          verdict="differs",
          reason="with circular padding SD-1.5's U-Net (at narrow widths) commutes "
          "with shifts by multiples of 2³ = 8 only: its stride-2 downsamplers break "
          "the others (s = 1, 2, 4: off by 0.2 down to 0.002 of the output's largest "
          "value); SD-1.5 pads with "
          "zeros, which breaks it near the borders too. GroupNorm and attention are "
          "global, not convolutions"),
    Claim("5.5", "Only H and W vary: the channels at the input and output are fixed.",
          rows=(CONV_STACK,),
          chapter="arch-remark-5-2"),
    Claim("5.5", "Inside the U-Net the channel width changes in steps.",
          rows=(UNET,),
          chapter="arch-remark-5-2"),
    # --- §6 layers --------------------------------------------------------------------
    Claim("6", "Every layer of the U-Net and the VAE decoder is defined in §6 from "
          "cross-correlation, matrix operations and elementary or special functions.",
          rows=(LAYERNORM, GEGLU, VAE_ATTN),
          verdict="differs",
          reason="SD-1.5 also runs LayerNorm, the GEGLU feed-forward, the "
          "Transformer2DModel wrapper and the decoder's biased attention, none of "
          "them in §6"),
    Claim("6", "Each function's name is that of the library class or function.",
          rows=(NAMES_PRINTED, NAMES),
          verdict="differs",
          reason="6 of the 26 names are no library's: CrossAttentionMidBlock2D is "
          "diffusers' UNetMidBlock2DCrossAttn, CrossAttention{Down,Up}Block2D are "
          "CrossAttn{Down,Up}Block2D, Downsample2DNearest/Average are F.interpolate "
          "and F.avg_pool2d, Conv1x1 is a Conv2d with kernel 1; torch's "
          "MultiheadAttention exists, but SD-1.5 instantiates diffusers' Attention"),
    Claim("6", "Each definition's footnote gives the address of its implementation.",
          rows=(PATHS_PRINTED, PATHS),
          verdict="differs",
          reason="in diffusers 0.42.1 models/embeddings.py and resnet.py are where "
          "stated; unet_2d_condition.py and unet_2d_blocks.py moved to models/unets/, "
          "autoencoder_kl.py to models/autoencoders/ (its Decoder is in vae.py); "
          "attn_processor.py is attention_processor.py. The torch addresses are "
          "documentation pages, not checked offline"),
    Claim("6.1", "The 'convolution' of practice is cross-correlation: it does not "
          "flip the kernel.",
          rows=(FLIP,),
          chapter="ch-variable-sizes"),
    Claim("6.1", "torch.nn.Conv2d and torch.nn.functional.conv2d implement Def. 6.1.",
          rows=("(14) Conv2d, 1-based: (i−1)·s+u−p",)),
    Claim("6.1", "The implementations' cross-correlation matches (14).",
          rows=("(14) Conv2d as printed, i·s+u−p", "(14) Conv2d, 1-based: (i−1)·s+u−p"),
          verdict="differs",
          reason="with §2's 1-based indices torch reads row (i−1)·s+u−p: the printed "
          "i·s+u−p starts every window one stride late"),
    Claim("6.1", "The output size is H′ = ⌊(H − k + 2p)/s⌋ + 1, and likewise W′.",
          rows=("(14) output size H′ = ⌊(H−k+2p)/s⌋+1",)),
    Claim("6.2", "torch.nn.Linear and torch.nn.functional.linear implement Def. 6.2.",
          rows=("(15) Linear",)),
    Claim("6.3", "torch.nn.SiLU and torch.nn.functional.silu implement Def. 6.3.",
          rows=("(16) SiLU",)),
    Claim("6.4", "torch.nn.GroupNorm implements Def. 6.5.",
          rows=("(18)–(19) GroupNorm, U-Net ResnetBlock2D (G=32, ε=1e-5)",)),
    Claim("6.4", "The number of groups G must divide the channels C.",
          chapter="fn-decoder"),
    Claim("6.5", "Figure 3: a downsampling of length 6 to 3 with a filter of width 2 "
          "and stride 2 shares its two weights across the windows.",
          chapter="ch-variable-sizes"),
    Claim("6.5", "Figure 4: the matching upsampling, length 3 to 6, width 2, stride "
          "2, illustrates the upsampler.",
          chapter="ch-variable-sizes", verdict="differs",
          reason="the figure is a transposed convolution; SD-1.5's Upsample2D is "
          "nearest ×2 then a 3×3 convolution (a tied transposed convolution of width "
          "4)"),
    Claim("6.5.1", "Downsampling is a Conv2d with stride 2.",
          rows=("(20) Downsample2D (SD-1.5: k=3, s=2, p=1)",)),
    Claim("6.5.2", "Nearest and average pooling have no learnable parameters.",
          rows=("(21) Downsample2DNearest (0-based)",
                "(22) Downsample2DAverage (0-based)")),
    Claim("6.5.3", "torch.nn.functional.interpolate implements the nearest ×2 "
          "interpolation.",
          rows=("(23) Interpolate ×2, nearest (0-based)",)),
    Claim("6.5.3", "Upsampling is nearest interpolation followed by a stride-1 "
          "Conv2d.",
          rows=("(24) Upsample2D (SD-1.5: k=3, s=1, p=1)",)),
    Claim("6.6", "Concat joins two tensors along the channel dimension.",
          rows=("(27) Concat",)),
    Claim("6.7", "diffusers' embeddings.py and unet_2d_condition.py implement the "
          "timestep embedding.",
          rows=("(28) sinusoidal embedding, SD-1.5 order (all cos, then all sin)",
                "(29) TimestepEmbedding MLP")),
    Claim("6.7", "Components with small ω encode t coarsely (long periods), those "
          "with large ω finely (short periods).",
          chapter="ch-variable-sizes"),
    Claim("6.7", "Like the digits of a number, the upper ones estimate t roughly and "
          "the lower ones give remainders.",
          verdict="not checkable",
          reason="an analogy for teaching"),
    Claim("6.8", "torch.nn.functional.scaled_dot_product_attention implements Def. "
          "6.13.",
          rows=("(30) ScaledDotProductAttention",)),
    Claim("6.8", "torch.nn.MultiheadAttention implements Def. 6.14, as diffusers' "
          "attention processors do.",
          rows=("(31)–(33) MultiheadAttention, SD-1.5 cross-attention", TORCH_MHA),
          reason="torch's class computes Def. 6.14 corrected (W_Q, 8 heads, b_O) "
          "when loaded with SD-1.5's attn1 or attn2 Θ and zero in-projection "
          "biases; SD-1.5 itself never instantiates it"),
    Claim("6.8.1", "A dictionary returns the value stored under a key: D['dog'] = 2.",
          rows=(LOOKUP,)),
    Claim("6.8.1", "Attention is a soft dictionary: a weighted sum of the values, "
          "weighted towards the keys closest to the query.",
          rows=(SOFT, CLOSEST, INNER),
          verdict="differs",
          reason="the weighted sum holds; 'closest' does not: (35) weighs by inner "
          "product, and with q = (1, 0), k₁ = (1, 0), k₂ = (3, 0) the farther key k₂ "
          "gets 0.80 of the weight. Distance and inner product rank keys alike only "
          "for keys of equal norm"),
    Claim("6.8.1", "π(q) is the first row of the softmax in (30).",
          rows=(SOFT, "(30) ScaledDotProductAttention, as printed"),
          verdict="differs",
          reason="π(q) is the row of Softmax(QKᵀ/√d); the lecture writes "
          "Softmax(QKᵀ)/√d, and (30)'s superscript (√d)⁻¹ cancels the scaling"),
    Claim("6.8.1", "A one-hot π(q) makes attention an exact dictionary lookup.",
          rows=(LOOKUP,),
          chapter="ch-attention"),
    Claim("6.8.1", "In Prop. 6.2's proof the key k_{m*} has the inner product "
          "α‖q‖‖k_{m*}‖ with q_α, for a key parallel to q.",
          rows=("(51) hard-dictionary limit, as printed: k_{m*} ∥ q", HARD),
          verdict="differs",
          reason="only for a key pointing the same way; an anti-parallel key gets "
          "−α‖q‖‖k‖ and weight 0 in the limit"),
    Claim("6.8.1", "The exponential of the largest score dominates the softmax as α "
          "grows.",
          rows=(HARD, "(51) ties: the limit shares the weight"),
          reason="when the largest score is unique; tied keys share the weight"),
    Claim("6.8.1", "A key in the direction of the query selects its value.",
          rows=(HARD,)),
    Claim("6.9", "diffusers' ResnetBlock2D (resnet.py) implements the residual block.",
          rows=("(52)–(57) ResnetBlock2D",)),
    Claim("6.9", "The time embedding modulates the block by an affine (FiLM) map.",
          rows=("(53)–(54) ResnetBlock2D, as printed: FiLM after GroupNorm",),
          verdict="differs",
          reason="SD-1.5 only shifts: Linear(SiLU(h)) is added to the features "
          "before the second GroupNorm, with no scale"),
    Claim("6.9", "The 1×1 shortcut convolution is there to match the channels.",
          rows=("(56) shortcut Conv1x1 only where C_in ≠ C_out",
                "(56) shortcut Conv1x1 in every block, as printed"),
          reason="so SD-1.5 has it only where C_in ≠ C_out; (56) prints it in every "
          "block"),
    Claim("6.10", "diffusers' unet_2d_blocks.py implements the down, up and mid "
          "blocks.",
          rows=("(58)–(59) DownBlock2D",
                "(60)–(62) UpBlock2D",
                "(63)–(67) UNetMidBlock2DCrossAttn")),
    Claim("6.10", "An up block joins one skip connection to the input from below "
          "with Concat.",
          rows=("(60)–(62) UpBlock2D, as printed: one skip",),
          verdict="differs",
          reason="SD-1.5's up blocks concatenate a skip before each of their three "
          "residual blocks"),
    Claim("6.10", "The mid block uses self- and cross-attention.",
          rows=("(63)–(67) UNetMidBlock2DCrossAttn",)),
    Claim("6.10", "Self- and cross-attention act on the sequence of tokens, one per "
          "spatial position.",
          rows=("(69)–(72) attention stage = Transformer2DModel",
                "(31)–(33) MultiheadAttention, SD-1.5 self-attention")),
    Claim("6.10", "The skip connection of a cross-attention up block has the "
          "resolution of the upsampled input.",
          rows=("(74) CrossAttnUpBlock2D upsamples first, as printed",),
          verdict="differs",
          reason="SD-1.5 upsamples at the end of the block: its skips have the "
          "resolution of the block's input"),
    Claim("6.11", "The decoder's map to RGB is a 1×1 convolution.",
          rows=("Def. 6.21 Conv1x1 as the decoder's RGB projection",
                "Def. 6.21 RGB head of SD-1.5: Conv2d 3×3 ∘ SiLU ∘ GroupNorm"),
          verdict="differs",
          reason="SD-1.5 ends with GroupNorm, SiLU and a 3×3 convolution from 128 "
          "channels to 3"),
    # --- §7 receptive fields ----------------------------------------------------------
    Claim("7", "A U-Net such as SD-1.5's reaches its whole input with few layers.",
          rows=(WHOLE_PATH,),
          chapter="receptive-sd15"),
    Claim("7.1", "A stack of 3×3 convolutions reaches the whole width W when its "
          "receptive field is at least W.",
          rows=("(80) full-width condition, pure CNN",),
          chapter="ch-receptive",
          reason="for the central pixel; a corner pixel needs L ≥ W − 1"),
    Claim("7.2", "One step at the coarsest of L halvings spans 2^L input pixels.",
          rows=("(81) U-Net receptive field, Downsample2DNearest",)),
    Claim("7.2", "(81) is the receptive field of a U-Net that downsamples with "
          "Downsample2D.",
          rows=("(81) U-Net receptive field, SD-1.5's Downsample2D",
                "(81) corrected for the downsampler's kernel"),
          verdict="differs",
          reason="(81) holds for a subsampler; SD-1.5's 3×3 stride-2 Downsample2D "
          "adds 2(2^L − 1): 137, not 123, on SD-1.5's down path"),
    Claim("7.2", "(81) is the receptive field of the U-Net.",
          rows=(WHOLE_PATH,),
          verdict="differs",
          reason="(81) counts the down path only; with the mid block, the up path "
          "and conv_in/conv_out SD-1.5's conv path reaches 397 ± 4 pixels"),
    Claim("7.2", "R_unet ≥ W is a sufficient condition to reach the whole width W.",
          rows=("(83) Theorem 7.1: R_unet ≥ W lets an output pixel reach all W columns",
                "(83) corrected: an output pixel reaches all W columns"),
          verdict="differs",
          reason="a level-L pixel sits on a multiple of 2^L: its field can be wide "
          "enough and still miss a column (e.g. n = 1, W = 7, L = 1); one level more "
          "always suffices"),
    Claim("7.2", "The U-Net needs O(log W) levels where a pure CNN needs O(W) layers.",
          rows=(LEVELS, "(80) full-width condition, pure CNN"),
          chapter="ch-receptive"),
    Claim("7.2", "Theorem 7.1 follows from (82) by rearranging and taking log₂.",
          rows=("(83) Theorem 7.1: proof steps",)),
    # --- §8 the two networks ----------------------------------------------------------
    Claim("8.1", "Θ_U concatenates the coefficients of §6's layers, from Conv2d to "
          "CrossAttentionMidBlock2D and Conv1x1.",
          rows=(UNET, LAYERNORM, "(90) Conv1x1 output head, as printed"),
          verdict="differs",
          reason="SD-1.5's Θ_U also holds conv_in, the cross-attention down/up "
          "blocks, LayerNorms, GEGLU and proj_in/out; its head is a 3×3 convolution, "
          "not Conv1x1"),
    Claim("8.1", "The time embedding h is injected into every residual block.",
          rows=(UNET,),
          chapter="ch-architecture"),
    Claim("8.1", "diffusers' UNet2DConditionModel is the conditional U-Net.",
          rows=(UNET,)),
    Claim("8.1", "Each block is a composition of §6's basic operations.",
          rows=(LAYERNORM, GEGLU),
          verdict="differs",
          reason="the transformer blocks also use LayerNorm and GEGLU, which §6 lacks"),
    Claim("8.1", "The U-Net's output follows the input's H × W.",
          rows=(UNET,),
          chapter="fn-network"),
    Claim("8.2", "The Stable Diffusion VAEs' decoder is the Decoder inside "
          "AutoencoderKL.",
          rows=(DECODE,)),
    Claim("8.2", "The decoder is deterministic.",
          rows=(DECODE,)),
    Claim("8.2", "The decoder is a composition of ResnetBlock2D and Upsample2D.",
          rows=(DEC_PRINTED, DEC_STAGES),
          verdict="differs",
          reason="SD-1.5 also runs post_quant_conv, conv_in, a mid block with "
          "self-attention and a GroupNorm → SiLU → 3×3 conv head"),
    Claim("8.2", "The decoder has no time dependence.",
          rows=("(93) ResnetBlock2D without time input (VAE, ε = 1e-6)",),
          chapter="ch-architecture"),
    Claim("8.2", "Without time dependence the decoder's blocks take h = 0.",
          rows=("(93) ResnetBlock2D(·, 0): h = 0 with the FiLM Linears of Def. 6.15",
                "(93) h = 0: Def. 6.15's FiLM folds into norm2's affine"),
          verdict="differs",
          reason="SD-1.5's VAE blocks have no time projection; h = 0 would still "
          "apply the Linears' biases as a scale and shift"),
    Claim("8.2", "diffusers' autoencoder_kl.py implements AutoencoderKL and its "
          "Decoder.",
          rows=(DECODE,)),
    # --- §9 summary, §10 preview ------------------------------------------------------
    Claim("9", "The lecture has written the U-Net and the VAE decoder down as "
          "functions.",
          rows=("(85) D₀ = Z, as printed: no conv_in", DEC_PRINTED),
          chapter="fn-errata", verdict="differs",
          reason="as printed the definitions are not SD-1.5's and cannot run on its "
          "Θ; the corrected ones match diffusers"),
    Claim("9", "Both networks take variable sizes because each layer is defined "
          "independently of the spatial size.",
          rows=(CONV_STACK,),
          chapter="vs-confirmed"),
    Claim("9", "The U-Net of image generators differs from the originally proposed "
          "one.",
          chapter="arch-remark-5-1"),
    Claim("10", "The next lecture explains the text encoder.",
          verdict="not checkable",
          reason="a plan for the next lecture"),
    Claim("10", "The U-Net's text context comes from a text encoder.",
          chapter="closing-text-encoder"),
)


def by_section() -> dict[str, list[Claim]]:
    """The claims grouped by section, in the lecture's order."""
    grouped: dict[str, list[Claim]] = {}
    for c in sorted(CLAIMS, key=lambda c: SECTIONS.index(c.section)):
        grouped.setdefault(c.section, []).append(c)
    return grouped


def counts() -> dict[str, int]:
    """How many claims have each verdict."""
    return {v: sum(c.verdict == v for c in CLAIMS) for v in VERDICTS}


def table() -> Table:
    """The catalogue as the book's table (a table of facts: nothing is run)."""
    n = counts()
    title = (f"Claims of the lecture's prose: {len(CLAIMS)}; " +
             ", ".join(f"{k} {v}" for k, v in n.items()))
    rows = [[c.section, c.claim, c.checked_by,
             c.verdict + (f": {c.reason}" if c.reason else "")]
            for claims in by_section().values() for c in claims]
    return Table(title, ["§", "claim", "checked by", "verdict"], rows, css="claims")
