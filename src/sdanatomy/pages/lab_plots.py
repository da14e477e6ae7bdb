"""The miniature lab's page (ch07b): its table and figures, from the stored results.

Nothing here trains: every function reads the JSON that ``python -m
sdanatomy.miniature.lab`` writes (:func:`load`). A difference from the baseline is
called one only where the seeds' ranges do not overlap (:func:`verdicts`).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from sdanatomy.ledger.registry import Table
from sdanatomy.miniature import WEIGHTS_DIR
from sdanatomy.miniature.lab import RESULTS_DIR, curve

TAIL = 10            # the final loss: the mean of the loss curve's last TAIL points
RERUN = RESULTS_DIR / "rerun_baseline.json"      # the lab command, run again (ch07b)
LABELS = {
    "baseline": "baseline (SD-1.5's shape)", "no_skip": "(a) no skip connections",
    "no_self": "(b) no self-attention", "no_cross": "(c) no cross-attention",
    "no_down": "(d) no downsampling", "film": "(e) printed FiLM after GroupNorm",
    "head1x1": "(f) printed 1×1 output head", "half": "(g) half width",
    "double": "(g) double width",
}


def load(path: Path | str | None = None) -> dict:
    """The lab's results (default: the shipped ``lab_results/results.json``)."""
    path = Path(path) if path is not None else RESULTS_DIR / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no lab results at {path}: run python -m "
                                f"sdanatomy.miniature.lab first")
    results = json.loads(path.read_text())
    if not results.get("variants"):
        raise ValueError(f"{path} holds no variant's results")
    return results


def final_loss(run: dict) -> float:
    """The training loss at the end of a run: its curve's last TAIL points' mean."""
    tail = run["loss_curve"][-TAIL:]
    return sum(tail) / len(tail)


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.fmean(values), min(values), max(values)


def summary(results: dict) -> dict[str, dict]:
    """Per variant: parameters, seeds, and (mean, min, max) over seeds of the
    conditional accuracy, the diversity and the final loss; the receptive fields."""
    out = {}
    for name, entry in results["variants"].items():
        runs = entry["runs"]
        out[name] = dict(
            parameters=entry["unet_parameters"], seeds=[r["seed"] for r in runs],
            accuracy=_spread([r["conditional_accuracy"] for r in runs]),
            diversity=_spread([r["diversity"] for r in runs]),
            loss=_spread([final_loss(r) for r in runs]),
            field=entry["receptive_field"])
    return out


def verdicts(results: dict, measure: str = "loss") -> dict[str, str]:
    """Each variant against the baseline on ``measure`` (loss, accuracy or diversity):
    "higher" or "lower" where its range over seeds lies wholly above or below the
    baseline's, else "within the seed spread"; no verdict with fewer than two seeds on
    either side (one seed has no spread)."""
    s = summary(results)
    if "baseline" not in s:
        raise ValueError("the verdicts compare with the baseline, which is not in "
                         "the results")
    if measure not in ("loss", "accuracy", "diversity"):
        raise ValueError(f"measure is loss, accuracy or diversity; got {measure!r}")
    _, lo, hi = s["baseline"][measure]
    out = {}
    for name, row in s.items():
        _, v_lo, v_hi = row[measure]
        if min(len(row["seeds"]), len(s["baseline"]["seeds"])) < 2:
            out[name] = "one seed: no verdict"
        else:
            out[name] = ("higher" if v_lo > hi else "lower" if v_hi < lo
                         else "within the seed spread")
    return out


def verdict_table(results: dict) -> Table:
    """Each variant against the baseline on the three measures (:func:`verdicts`)."""
    measures = ("loss", "accuracy", "diversity")
    v = {m: verdicts(results, m) for m in measures}
    rows = [[LABELS.get(n, n)] + [v[m][n] for m in measures]
            for n in results["variants"] if n != "baseline"]
    return Table("Against the baseline: outside its seed range, or within it",
                 ["variant", "final loss", "accuracy", "diversity"], rows)


def reproduction(results: dict, training: Path | str | None = None) -> float:
    """The largest relative difference between the lab's baseline, first seed, and the
    shipped model's own training (``weights/training.json``) over the lab's steps: the
    same initialisation, data and batches, so the same loss curve up to round-off."""
    path = Path(training) if training is not None else WEIGHTS_DIR / "training.json"
    shipped = json.loads(path.read_text())
    run = results["variants"]["baseline"]["runs"][0]
    if run["seed"] != shipped["settings"]["seed"]:
        raise ValueError(f"the shipped model was trained with seed "
                         f"{shipped['settings']['seed']}; the lab's first is "
                         f"{run['seed']}")
    ours = run["loss_curve"]
    theirs = curve(shipped["unet_loss"][:results["settings"]["steps"]], len(ours))
    return max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))


def rerun_rows(results: dict, rerun: dict) -> list[dict]:
    """Each run of ``rerun`` beside the stored run of the same variant and seed: final
    loss and accuracy, stored and rerun; whether the rerun lies within the stored range
    over seeds; whether the two runs are identical (every number but the time)."""
    ours = {k: v for k, v in results["settings"].items() if k != "seeds"}
    theirs = {k: v for k, v in rerun["settings"].items() if k != "seeds"}
    if ours != theirs:
        other = sorted(k for k in ours.keys() | theirs.keys()
                       if ours.get(k) != theirs.get(k))
        raise ValueError(f"the rerun used other settings than the stored lab: "
                         f"{', '.join(other)}")
    s, rows = summary(results), []
    for name, entry in rerun["variants"].items():
        runs = results["variants"].get(name, {}).get("runs", [])
        stored = {r["seed"]: r for r in runs}
        for run in entry["runs"]:
            if run["seed"] not in stored:
                raise ValueError(f"the stored lab has no run of {name}, seed "
                                 f"{run['seed']}, to compare with")
            old = stored[run["seed"]]
            row = dict(variant=name, seed=run["seed"], identical=all(
                old[k] == v for k, v in run.items() if k != "train_seconds"))
            for measure, value in (("loss", final_loss), ("accuracy",
                                   lambda r: r["conditional_accuracy"])):
                _, lo, hi = s[name][measure]
                row[measure] = (value(old), value(run))
                row[f"{measure}_within"] = lo <= value(run) <= hi
            rows.append(row)
    return rows


def rerun_table(results: dict, rerun: dict) -> Table:
    """:func:`rerun_rows` as the page's table of checks: each rerun within the stored
    range over seeds, of final loss and of accuracy."""
    rows = rerun_rows(results, rerun)

    def pair(values, fmt):
        old, new = values
        return [f"{old:{fmt}}", f"{new:{fmt}}", f"{new - old:+.1e}"]

    cells = [[r["variant"], str(r["seed"])] + pair(r["loss"], ".4f")
             + pair(r["accuracy"], ".2f")
             + ["yes" if r["loss_within"] and r["accuracy_within"] else "NO",
                "identical" if r["identical"] else "differs"] for r in rows]
    s = summary(results)
    notes = [f"stored range over seeds {s[n]['seeds']}, {n}: final loss "
             f"[{s[n]['loss'][1]:.4f}, {s[n]['loss'][2]:.4f}], accuracy "
             f"[{s[n]['accuracy'][1]:.2f}, {s[n]['accuracy'][2]:.2f}]"
             for n in dict.fromkeys(r["variant"] for r in rows)]

    def machine(r):
        n = r.get("threads", "?")
        return f"torch {r.get('torch', '?')}, {n} thread{'' if n == 1 else 's'}"

    made = rerun.get("rerun", {})
    notes.append(f"stored lab: {machine(results)}; rerun: {machine(rerun)}"
                 + (f", {made['date']}" if made else ""))
    if made:
        notes.append(f"rerun command: {made['command']}")
    return Table("Does the lab reproduce? The stored runs and a rerun",
                 ["variant", "seed", "loss stored", "rerun", "Δ", "accuracy stored",
                  "rerun", "Δ", "within the range", "stored numbers"], cells,
                 notes=notes, ok=all(r["loss_within"] and r["accuracy_within"]
                                     for r in rows))


def _cell(spread, fmt: str) -> str:
    mean, lo, hi = spread
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def table(results: dict) -> Table:
    """The ablation table: mean [min, max] over seeds."""
    s = summary(results)
    side = min(next(iter(s.values()))["field"], key=int)    # the latent's own side, "8"
    rows = [[LABELS.get(n, n), f"{r['parameters']:,}", str(len(r["seeds"])),
             _cell(r["loss"], ".1f"), _cell(r["accuracy"], ".2f"),
             _cell(r["diversity"], ".2f"),
             "×".join(map(str, r["field"][side])),
             "×".join(map(str, r["field"]["64"]))] for n, r in s.items()]
    header = ["variant", "U-Net parameters", "seeds", "final loss", "accuracy",
              "diversity", f"field {side}×{side}", "field 64×64"]
    steps = results["settings"]["steps"]
    points = len(next(iter(results["variants"].values()))["runs"][0]["loss_curve"])
    last = round(min(TAIL, points) * steps / points)          # steps the final loss spans
    return Table(f"The miniature lab: {steps} steps a run, mean [min, max] over seeds",
                 header, rows,
                 notes=[f"final loss: the mean loss over a run's last {last} steps; "
                        f"field: attention off, GroupNorm statistics frozen, central "
                        f"output pixel"])


def loss_figure(results: dict, variants=None) -> Figure:
    """The training-loss curves: the mean over seeds, shaded from the lowest to the
    highest seed; on the right, the second half of training enlarged."""
    names = list(variants or results["variants"])
    steps = results["settings"]["steps"]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    full, late = fig.subplots(1, 2, width_ratios=(1.2, 1))
    tail = []
    for k, name in enumerate(names):
        curves = [r["loss_curve"] for r in results["variants"][name]["runs"]]
        n = len(curves[0])
        x = [(i + 0.5) * steps / n for i in range(n)]
        mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
        low = [min(c[i] for c in curves) for i in range(n)]
        high = [max(c[i] for c in curves) for i in range(n)]
        style = dict(color="black", lw=2.2) if name == "baseline" else dict(
            color=f"C{k % 10}", lw=1.2)
        half = n // 2
        for ax, a in ((full, 0), (late, half)):
            ax.plot(x[a:], mean[a:], label=LABELS.get(name, name), **style)
            ax.fill_between(x[a:], low[a:], high[a:], color=style["color"], alpha=0.12,
                            lw=0)
        tail += low[half:] + high[half:]
    late.set_ylim(min(tail) - 1, min(max(tail) + 1, 1.3 * min(tail)))
    for ax, title in ((full, "the whole run"), (late, "the second half, enlarged")):
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    full.set_ylabel("loss (6), summed over the latent's 256 numbers")
    full.legend(fontsize=8)
    return fig


def samples_figure(results: dict, variants=None) -> Figure:
    """The stored samples of the first seed: one row per variant, two per digit."""
    import numpy as np

    names = [n for n in (variants or results["variants"])
             if "samples" in results["variants"][n]]
    fig = Figure(figsize=(9, 0.55 * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        images = np.asarray(results["variants"][name]["samples"]["images"], dtype=float)
        strip = np.concatenate(list(images), axis=1)                 # (16, 16·n)
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255)
        labels = results["variants"][name]["samples"]["labels"]
        ax.set_xticks([16 * (i + 0.5) - 0.5 for i in range(len(labels))], labels,
                      fontsize=6)
        ax.set_yticks([])
        ax.set_ylabel(LABELS.get(name, name), rotation=0, ha="right", va="center",
                      fontsize=8)
    axes[0].set_title("the prompted digit under each sample", fontsize=8)
    return fig
