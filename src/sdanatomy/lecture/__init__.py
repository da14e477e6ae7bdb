"""The lecture's definitions as functions of Θ, using torch alone (no diffusers, no transformers).

One module a part of the lecture: :mod:`.notation` (§2), :mod:`.diffusion` (§3), :mod:`.layers`
(§6.1–6.6, §6.11), :mod:`.embeddings` (§6.7), :mod:`.attention` (§6.8), :mod:`.blocks`
(§6.9–6.10), :mod:`.unet` (§8.1), :mod:`.vae_decoder` (§8.2), :mod:`.receptive` (§7), and
:mod:`.config`, SD-1.5's hyperparameters (§5). These modules import nothing of the package but
each other; ``sdanatomy.ledger`` checks them against diffusers.
"""
