"""A tiny SD-shaped model (SD-1.5's classes at toy widths) and its diffusers folder, for the loader tests
of test_sd15.py and test_bad_input.py. Not a test module."""
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

TINY_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
    norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), in_channels=4, out_channels=4, sample_size=16,
)
TINY_VAE = dict(
    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
)
TINY_CLIP = dict(
    vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=16, hidden_act="quick_gelu", projection_dim=32,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)


def save_tiny_sd(root: Path) -> dict[str, torch.nn.Module]:
    """Build the three tiny modules (seed 0) and save them under root/{unet,vae,text_encoder} with the
    libraries' own save_pretrained, as safetensors; return the modules."""
    torch.manual_seed(0)
    modules = {"unet": UNet2DConditionModel(**TINY_UNET), "vae": AutoencoderKL(**TINY_VAE),
               "text_encoder": CLIPTextModel(CLIPTextConfig(**TINY_CLIP))}
    for name, module in modules.items():
        module.save_pretrained(Path(root) / name, safe_serialization=True)
    return modules
