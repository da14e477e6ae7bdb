// The live page (book/live.md): the miniature's text encoder, U-Net and VAE decoder
// run in the reader's browser with onnxruntime-web (wasm, one thread), served from this
// site.
// The sampler is in live_ddim.js; this file tokenizes, draws and wires the controls.
"use strict";

(function () {
  const here = document.currentScript.src;
  const base = new URL("live/", here).href;    // the exported models, onnxruntime-web
  const $ = (id) => document.getElementById(id);

  function say(text) { $("live-status").textContent = text; }

  function webAssemblyWorks() {
    try {
      const m = new WebAssembly.Module(Uint8Array.of(0, 97, 115, 109, 1, 0, 0, 0));
      return m instanceof WebAssembly.Module;
    } catch (e) { return false; }
  }

  // [start, words…, end, pad…], as sdanatomy.miniature.tokenize lays them out.
  function tokenize(meta, prompt) {
    const index = new Map(meta.vocab.map((w, i) => [w, i]));
    const words = prompt.toLowerCase().split(/\s+/).filter((w) => w.length > 0);
    const unknown = words.filter((w) => !index.has(w) || meta.specials.includes(w));
    if (unknown.length)
      throw new Error(`The miniature does not know ${unknown.map((w) => `"${w}"`)
        .join(", ")}. It knows the digits as words (zero … nine) or numerals ` +
        "(0 … 9) and " + meta.vocab.slice(-5).join(", ") + ".");
    if (words.length > meta.M - 2)
      throw new Error(`A prompt has at most ${meta.M - 2} words ` +
                      `(M = ${meta.M} tokens with start and end).`);
    const ids = [index.get("<|startoftext|>"), ...words.map((w) => index.get(w)),
                 index.get("<|endoftext|>")];
    while (ids.length < meta.M) ids.push(index.get("<|pad|>"));
    return ids;
  }

  // A seeded Gaussian stream (mulberry32 + Box–Muller): not torch.randn's stream.
  function gaussian(seed, n) {
    let s = seed >>> 0;
    const uniform = () => {
      s = (s + 0x6D2B79F5) >>> 0;
      let r = Math.imul(s ^ (s >>> 15), 1 | s);
      r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
      return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
    };
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u = 1 - uniform(), v = uniform(), r = Math.sqrt(-2 * Math.log(u));
      out[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
    return out;
  }

  function drawGrey(canvas, pixels, size) {      // pixels in [0, 1], size × size
    canvas.width = size; canvas.height = size;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(size, size);
    for (let i = 0; i < size * size; i++) {
      const v = Math.round(Math.min(1, Math.max(0, pixels[i])) * 255);
      img.data.set([v, v, v, 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
  }

  function viridisish(x) {                       // dark blue -> green -> yellow
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                   [253, 231, 37]];
    const p = Math.min(0.9999, Math.max(0, x)) * (stops.length - 1), i = Math.floor(p);
    return stops[i].map((c, k) => Math.round(c + (p - i) * (stops[i + 1][k] - c)));
  }

  // probs (2, heads, N, M): the prompt's half (batch index 1), mean over the heads; one
  // colour scale for all maps, from the smallest weight (dark) to the largest (yellow).
  function drawAttention(meta, probs, ids) {
    const heads = meta.heads, M = meta.M, side = meta.latent_shape[1], N = side * side;
    const mean = new Float32Array(N * M);
    for (let h = 0; h < heads; h++)
      for (let q = 0; q < N; q++)
        for (let m = 0; m < M; m++)
          mean[q * M + m] += probs[((heads + h) * N + q) * M + m] / heads;
    const lo = Math.min(...mean), hi = Math.max(...mean);
    const box = $("live-attn");
    box.replaceChildren();
    for (let m = 0; m < M; m++) {
      const cell = document.createElement("div"), c = document.createElement("canvas");
      c.width = side; c.height = side;
      const ctx = c.getContext("2d"), img = ctx.createImageData(side, side);
      for (let q = 0; q < N; q++) {
        const x = (mean[q * M + m] - lo) / (hi - lo || 1);
        img.data.set([...viridisish(x), 255], 4 * q);
      }
      ctx.putImageData(img, 0, 0);
      const label = document.createElement("span");
      label.textContent = meta.vocab[ids[m]];
      cell.append(c, label);
      box.append(cell);
    }
    return [lo, hi];
  }

  async function start() {
    if (location.protocol === "file:") {
      say("This page reads its models with fetch, which browsers refuse from " +
          "file://. Serve the site instead: python -m http.server -d _build/html, " +
          "then open " +
          "http://localhost:8000/book/live.html.");
      return;
    }
    if (!webAssemblyWorks()) {
      say("This browser cannot run WebAssembly, so the live generator is off; the " +
          "precomputed result below was made by the same models in Python.");
      return;
    }
    if (typeof ort === "undefined")
      throw new Error("onnxruntime-web is missing from this site (_static/live/): " +
                      "build the book with make book, which exports the models.");
    $("live-precomputed").hidden = true;
    $("live-output").hidden = false;
    ort.env.wasm.numThreads = 1;                 // no SharedArrayBuffer needed
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = base;
    say("Loading the models …");
    const [meta, te, un, de] = await Promise.all([
      fetch(base + "miniature.json").then((r) => r.json()),
      ...["text_encoder", "unet", "decoder"].map((f) => ort.InferenceSession.create(
        base + f + ".onnx", {executionProviders: ["wasm"]}))]);
    const size = meta.image_size, latent = meta.latent_shape;
    const n = latent.reduce((a, b) => a * b);
    const alphaBar = Float64Array.from(meta.alpha_bars);

    async function context(ids) {                // [∅, prompt] -> (2, M, 32)
      const flat = BigInt64Array.from([...tokenize(meta, ""), ...ids].map(BigInt));
      return (await te.run({ids: new ort.Tensor("int64", flat, [2, meta.M])})).context;
    }
    async function decode(z) {
      const out = await de.run({z: new ort.Tensor("float32", z, [1, ...latent])});
      return out.image.data;
    }

    async function generate({prompt, w, steps, seed, noise, keep = true}) {
      const ids = tokenize(meta, prompt);
      const t0 = performance.now(), ctx = await context(ids);
      const unet = async (z, t) => {
        const zz = new Float32Array(2 * n); zz.set(z); zz.set(z, n);
        const out = await un.run({z: new ort.Tensor("float32", zz, [2, ...latent]),
          t: new ort.Tensor("int64", BigInt64Array.of(BigInt(t), BigInt(t)), [2]),
          context: ctx});
        const e = out.eps.data;
        return {uncond: e.slice(0, n), cond: e.slice(n), probs: out.probs.data};
      };
      const z0 = noise ? Float32Array.from(noise) : gaussian(seed, n);
      const rec = {ids, t: [], x0: [], probs: [], first: null};
      const settings = {w, steps, alphaBar, finalAlphaBar: meta.final_alpha_bar,
                        offset: meta.steps_offset};
      const zFinal = await ddimSample(unet, z0, settings, async (i, t, z, r) => {
        if (i === 0)
          rec.first = {t, uncond: Array.from(r.uncond), cond: Array.from(r.cond),
                       guided: Array.from(r.eps)};
        rec.t.push(t); rec.probs.push(r.probs);
        if (keep) rec.x0.push(await decode(r.x0));
      });
      rec.latent = zFinal;
      rec.image = await decode(zFinal);
      rec.ms = performance.now() - t0;
      return rec;
    }

    function show(rec) {
      drawGrey($("live-image"), rec.image, size);
      const strip = $("live-strip");
      strip.replaceChildren(...rec.x0.map((x, i) => {
        const c = document.createElement("canvas");
        drawGrey(c, x, size);
        c.title = `step ${i + 1}, t = ${rec.t[i]}`;
        return c;
      }));
      const slider = $("live-attn-step");
      slider.max = rec.probs.length; slider.value = rec.probs.length;
      const attention = () => {
        const i = Number(slider.value) - 1;
        const [lo, hi] = drawAttention(meta, rec.probs[i], rec.ids);
        $("live-attn-label").textContent = `step ${i + 1}, t = ${rec.t[i]}: weights ` +
          `from ${lo.toFixed(3)} (dark) to ${hi.toFixed(3)} (yellow)`;
      };
      slider.oninput = attention;
      attention();
    }

    function settings() {            // the controls, checked; an Error names the fault
      const prompt = $("live-prompt").value;
      tokenize(meta, prompt);
      const w = Number($("live-w").value), steps = Number($("live-steps").value);
      const seed = Number($("live-seed").value);
      if (!Number.isInteger(steps) || steps < 1 || steps > 100)
        throw new Error(`Steps must be a whole number from 1 to 100; got ` +
                        `"${$("live-steps").value}".`);
      if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32)
        throw new Error(`The seed must be a whole number from 0 to 2³² − 1; got ` +
                        `"${$("live-seed").value}".`);
      return {prompt, w, steps, seed, noise: null};
    }

    const api = {meta, generate, tokenize: (p) => tokenize(meta, p), last: null};
    window.sdLive = api;

    $("live-generate").addEventListener("click", async () => {
      const error = $("live-error"), usePython = $("live-python-noise").checked;
      let opts;
      try {
        opts = settings();
      } catch (e) {
        error.textContent = e.message; error.hidden = false;   // nothing else changes
        return;
      }
      error.hidden = true;
      if (usePython) opts.noise = meta.test.noise;
      $("live-generate").disabled = true;
      say("Generating …");
      const rec = await generate(opts);
      api.last = rec;
      show(rec);
      say(`Done: ${opts.steps} steps in ${Math.round(rec.ms)} ms (each step one ` +
          `U-Net call on a batch of two, then the decoder for the strip) with ` +
          (usePython ? "the initial noise PyTorch drew for seed " + meta.test.seed
                     : "this page's Gaussian stream for seed " + opts.seed) + ".");
      const t = meta.test;
      const same = opts.prompt.trim().toLowerCase() === t.prompt
        && opts.w === t.guidance && opts.steps === t.steps;
      if (usePython && same) {
        const d = Math.max(...rec.image.map((v, i) => Math.abs(v - t.final_image[i])));
        say($("live-status").textContent + " The same settings in Python (generate) " +
            "gave an image that differs from this one by at most " +
            `${d.toExponential(1)} ` +
            `(pixel values in [0, 1]).`);
      }
      $("live-generate").disabled = false;
    });
    $("live-w").addEventListener("input", () => {
      $("live-w-value").textContent = Number($("live-w").value).toFixed(1);
    });
    $("live-generate").disabled = false;
    say("Ready: the models are loaded (" + meta.vocab.length + " words).");
  }

  window.addEventListener("DOMContentLoaded", () => {
    start().catch((e) => say("The live generator failed: " + e.message));
  });
})();
