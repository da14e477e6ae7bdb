"""sdanatomy: the Stable Diffusion 1.5 U-Net and VAE decoder, formula by formula.

The package behind the executable textbook: every definition of the lecture
"CNNs for Image Generation" as a pure function of its parameters Θ, the equation
ledger that checks each one against PyTorch and diffusers, and the SD-1.5 modules
themselves (real weights when you have them, the exact architecture otherwise).
"""
import os as _os

# The book is offline by design: the Hugging Face libraries must never try a download.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("DISABLE_TELEMETRY", "1")

import warnings as _warnings  # noqa: E402

# diffusers imports tqdm.auto, which warns in a notebook without ipywidgets and then falls back
# to plain text progress bars: harmless, and noise on every page of the book.
_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

from . import offline  # noqa: E402

if _os.environ.get(offline.ENV_VAR) == "1":
    offline.forbid_network()

__version__ = "0.1.0"
