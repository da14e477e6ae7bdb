"""SD-1.5's hyperparameters, lecture §5: the values the definitions of §6–§8 take.

Plain data, spelled exactly as diffusers' ``config.json`` files spell them, so that the same dict
configures the book's functions (:func:`sdanatomy.lecture.unet.unet`,
:func:`sdanatomy.lecture.vae_decoder.vae_decoder`) and diffusers' modules
(:mod:`sdanatomy.sd15` builds them from these). They live with the definitions because the
lecture states them (§5's widths, levels and blocks); nothing here imports diffusers.
"""
from __future__ import annotations

# unet/config.json of runwayml/stable-diffusion-v1-5 (diffusers 0.6.0), every field.
UNET_CONFIG = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
    center_input_sample=False, cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
# vae/config.json of the same repository. That 0.6.0-era file predates the scaling_factor field;
# 0.18215 is AutoencoderKL's default and the `scale_factor` of LDM's v1-inference.yaml.
VAE_CONFIG = dict(
    act_fn="silu", block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3,
    sample_size=512, scaling_factor=0.18215,
)
# text_encoder/config.json (the text tower of openai/clip-vit-large-patch14), model fields only.
# eos_token_id=2 is the legacy value SD-1.5 ships with: transformers then pools at the argmax
# token id, which is the real end-of-text token 49407.
TEXT_ENCODER_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1, attention_dropout=0.0,
    dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
)
# scheduler/scheduler_config.json (PNDMScheduler), including its explicit trained_betas: null.
SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False, trained_betas=None,
)
