// The live page's sampler: DDIM with classifier-free guidance, as the book writes it
// in Python (sdanatomy.lecture.diffusion: ddim_timesteps, guided, ddim_step; and
// miniature._ddim: steps_offset = 1, final ᾱ = ᾱ_0). Labels: the live page's equations.
"use strict";

// eq-live-timesteps: diffusers' "leading" spacing, plus SD-1.5's offset
function ddimTimesteps(T, steps, offset) {
  const k = Math.floor(T / steps);
  return Array.from({length: steps}, (_, i) => (steps - 1 - i) * k + offset);
}

// One step: ε̂ for [∅, c] in one U-Net call, guidance, x̂0, then DDIM with η = 0.
// alphaBar: ᾱ_0…ᾱ_{T−1} (float64); z: the latent z_t (Float32Array) -> z_{t'}.
async function ddimGuidedStep(unet, z, t, tPrev, w, alphaBar, finalAlphaBar) {
  const {uncond, cond, probs} = await unet(z, t);     // ε̂(z, t, ∅), ε̂(z, t, c)
  const n = z.length, eps = new Float32Array(n);
  for (let j = 0; j < n; j++)                         // eq-live-guidance: ε̃
    eps[j] = uncond[j] + w * (cond[j] - uncond[j]);
  const a = alphaBar[t];                              // ᾱ_t
  const aPrev = tPrev >= 0 ? alphaBar[tPrev] : finalAlphaBar;   // ᾱ_t', ᾱ_0 last
  const x0 = new Float32Array(n), next = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    x0[j] = (z[j] - Math.sqrt(1 - a) * eps[j]) / Math.sqrt(a);  // eq-live-x0: x̂0
    next[j] = Math.sqrt(aPrev) * x0[j]                          // eq-live-ddim
              + Math.sqrt(1 - aPrev) * eps[j];
  }
  return {next, x0, eps, uncond, cond, probs};
}

// The loop (miniature._ddim): from the noise z_T, one guided step per timestep.
async function ddimSample(unet, noise, {w, steps, alphaBar, finalAlphaBar, offset},
                          onStep) {
  const T = alphaBar.length, ts = ddimTimesteps(T, steps, offset);
  let z = Float32Array.from(noise);
  for (let i = 0; i < ts.length; i++) {
    const tPrev = ts[i] - Math.floor(T / steps);      // ddim_sample: t − T // steps
    const r = await ddimGuidedStep(unet, z, ts[i], tPrev, w, alphaBar, finalAlphaBar);
    if (onStep) await onStep(i, ts[i], z, r);
    z = r.next;
  }
  return z;
}
