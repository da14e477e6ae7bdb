"""The attention SD-1.5 runs (lecture §6.8): its 32 modules read off the U-Net, standalone
diffusers ``Attention`` modules with SD-1.5's settings, and the float16 study of the course
notes ("scale before QKV"). The definitions are in :mod:`sdanatomy.lecture.attention`; the table's layout in
:mod:`sdanatomy.pages.attention`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sdanatomy.sd15.reference import meta, Attention



# --- SD-1.5's attention modules -----------------------------------------------------------

def sd15_attention_modules() -> list[tuple[str, torch.nn.Module]]:
    """(name, diffusers Attention) for every attn1/attn2 of the SD-1.5 U-Net, on the meta device."""
    return [(n, m) for n, m in meta("unet").named_modules() if isinstance(m, Attention)]


def sd15_attention_table(latent: int = 64) -> list[dict]:
    """Heads, widths, projection shapes and token counts of every attention module of SD-1.5.

    Read from the U-Net built on the meta device, and from one meta forward pass at a
    ``latent``×``latent`` latent with a 77×768 context (forward hooks record X and C).
    """
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 8 or latent % 8:
        raise ValueError(f"the U-Net downsamples three times: latent must be a multiple of 8; got {latent!r}")
    unet, mods = meta("unet"), sd15_attention_modules()
    seen = {}

    def hook(name):
        def record(module, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            seen[name] = (tuple(x.shape), kwargs.get("encoder_hidden_states"))
        return record

    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in mods]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 4, latent, latent, device="meta"), torch.tensor([500], device="meta"),
                 encoder_hidden_states=torch.zeros(1, 77, 768, device="meta"))
    finally:
        for hd in handles:
            hd.remove()
    rows = []
    for name, m in mods:
        (_, N, C), ctx = seen[name]
        M = N if ctx is None else ctx.shape[1]
        side = math.isqrt(N)
        rows.append(dict(
            module=name, kind="cross" if m.is_cross_attention else "self", HW=f"{side}×{side}", N=N, C=C,
            M=M, d_ctx=m.cross_attention_dim, heads=m.heads, d=m.inner_dim // m.heads, scale=m.scale,
            to_q=tuple(m.to_q.weight.shape), to_k=tuple(m.to_k.weight.shape),
            to_v=tuple(m.to_v.weight.shape), to_out=tuple(m.to_out[0].weight.shape),
            qkv_bias=m.to_q.bias is not None, out_bias=m.to_out[0].bias is not None,
            scores=m.heads * N * M))
    return rows


def sd15_attention(C: int, *, cross: bool, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """A standalone diffusers Attention with SD-1.5's settings at a level of width C.

    SD-1.5 (attention_head_dim=8, which diffusers reads as the number of heads): 8 heads of
    width C/8; no bias on to_q/to_k/to_v, a bias on to_out.0; cross-attention reads 768-wide CLIP tokens.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = Attention(query_dim=C, cross_attention_dim=768 if cross else None, heads=8, dim_head=C // 8,
                      bias=False, out_bias=True)
    return torch.nn.Module.to(m, dtype=dtype).eval()


# --- numerical care: scale before or after the product (course notes, "Scale before QKV") ---

FP16_ORDERS = ("after", "before", "q-only")
FP16_MAX = 65504.0   # the largest finite float16


def _fp16(x: torch.Tensor) -> torch.Tensor:
    """Round to float16 and compute on in float32: float16 *storage*, float32 *arithmetic*.

    This is how float16 matrix products run on GPUs' tensor cores and on this CPU (products
    accumulated in float32, the result rounded once); it is also ~30× faster than float16
    kernels on a CPU. Overflow appears as it would: a result above 65504 becomes inf.
    """
    return x.half().float()


def scores_float16(Q: torch.Tensor, K: torch.Tensor, *, order: str) -> torch.Tensor:
    """The scores Q K^T/√d in float16, with the scaling at one of three places, (30).

    "after": (Q K^T)/√d, the product stored in float16 before the division;
    "before": (Q d^{-1/4})(K d^{-1/4})^T, as guided-diffusion's QKVAttention ("more stable with f16");
    "q-only": (Q/√d) K^T. Q (…, N, d), K (…, M, d) -> (…, N, M): float16 values, float32 dtype.
    """
    if order not in FP16_ORDERS:
        raise ValueError(f"order must be one of {FP16_ORDERS}; got {order!r}")
    d = Q.shape[-1]
    Q, K = _fp16(Q), _fp16(K)                               # the inputs are float16 tensors
    if order == "after":
        return _fp16(_fp16(Q @ K.transpose(-1, -2)) / math.sqrt(d))     # round, divide, round
    if order == "before":
        c = d ** -0.25
        return _fp16(_fp16(Q * c) @ _fp16(K * c).transpose(-1, -2))    # scale both, then the product
    return _fp16(_fp16(Q / math.sqrt(d)) @ K.transpose(-1, -2))         # scale q only


def _softmax_times_v_float16(S: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    P = _fp16(torch.softmax(S, dim=-1))   # (…, N, M), stored in float16
    return _fp16(P @ _fp16(V))            # (…, N, d_v)


def attention_float16(Q, K, V, *, order: str) -> torch.Tensor:
    """(30) in float16: the scores by ``order``, or ``order="F.sdpa"`` for torch's fused kernel.

    For the three explicit orders, softmax and the product with V are rounded to float16 as a
    float16 forward pass stores them; "F.sdpa" calls torch.nn.functional.scaled_dot_product_attention
    on float16 tensors, which is what diffusers' AttnProcessor2_0 does in SD-1.5.
    """
    if order == "F.sdpa":
        return F.scaled_dot_product_attention(Q.half(), K.half(), V.half()).float()
    return _softmax_times_v_float16(scores_float16(Q, K, order=order), V)


def float16_study(*, d: int = 40, N: int = 32, M: int = 32, sigmas=(1, 8, 32, 64, 128),
                  draws: int = 30, seed: int = 0) -> list[dict]:
    """Attention in float16 with the scaling after, before, on q only, or fused, against float64.

    Q, K have N(0, σ²) entries, V has N(0, 1); all three are rounded to float16 first and the
    float64 reference starts from those rounded values, so only the arithmetic is compared.
    Per σ and order, over ``draws`` independent draws: the share of draws whose output is not
    finite (overflow); for the finite ones the median of max|S − S_ref| / max|S_ref| (scores;
    not available inside the fused kernel) and the median and maximum of max|O − O_ref| (outputs).
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        Q = _fp16(sigma * torch.randn(draws, N, d, generator=g))       # (draws, N, d)
        K = _fp16(sigma * torch.randn(draws, M, d, generator=g))       # (draws, M, d)
        V = _fp16(torch.randn(draws, M, d, generator=g))               # (draws, M, d_v)
        S_ref = Q.double() @ K.double().transpose(-1, -2) / math.sqrt(d)      # (draws, N, M)
        O_ref = torch.softmax(S_ref, -1) @ V.double()
        for order in FP16_ORDERS + ("F.sdpa",):
            s_err = None
            if order == "F.sdpa":
                O = attention_float16(Q, K, V, order=order)
            else:
                S = scores_float16(Q, K, order=order)
                O = _softmax_times_v_float16(S, V)
                s_err = (S.double() - S_ref).abs().flatten(1).amax(1) / S_ref.abs().flatten(1).amax(1)
            finite = torch.isfinite(O).flatten(1).all(1)                     # (draws,)
            o_err = (O.double() - O_ref).abs().flatten(1).amax(1)[finite]
            ok = bool(finite.any())
            rows.append(dict(sigma=sigma, order=order, overflow=1 - finite.double().mean().item(),
                             max_score=S_ref.abs().max().item(),
                             s_median=s_err[finite].median().item() if ok and s_err is not None else math.nan,
                             o_median=o_err.median().item() if ok else math.nan,
                             o_max=o_err.max().item() if ok else math.nan))
    return rows


def format_float16_study(rows: list[dict]) -> str:
    """The float16 study as a text table: overflow share, score error, output error."""
    def e(x):
        return "—" if math.isnan(x) else ("0" if x == 0 else f"{x:.0e}")
    lines = [f"{'σ':>4}  {'max|S|':>6}  {'order':7}  {'overflow':>8}  {'score error':>11}  "
             f"{'output error':>12}  {'output error':>12}",
             f"{'':>4}  {'':>6}  {'':7}  {'':>8}  {'(median)':>11}  "
             f"{'(median)':>12}  {'(max)':>12}"]
    for r in rows:
        lines.append(f"{r['sigma']:>4}  {r['max_score']:>6.0f}  {r['order']:7}  "
                     f"{r['overflow']:>8.0%}  {e(r['s_median']):>11}  "
                     f"{e(r['o_median']):>12}  {e(r['o_max']):>12}")
    return "\n".join(lines)

