"""The lab page's table and figures (pages.lab_plots), on a small hand-made results dict
whose means, ranges and verdicts are written out here."""
import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from sdanatomy.pages import lab_plots as lp


def fake_run(seed, accuracy, diversity, curve):
    return dict(seed=seed, train_seconds=1.0, loss_curve=curve,
                conditional_accuracy=accuracy, diversity=diversity)


def fake_results():
    image = [[(i * 16 + j) % 256 for j in range(16)] for i in range(16)]
    samples = dict(labels=[d for d in range(10) for _ in range(2)], images=[image] * 20)

    def entry(params, runs):
        return dict(unet_parameters=params, text_encoder_parameters=10, runs=runs,
                    receptive_field={"8": [8, 8], "64": [61, 61]}, samples=samples)

    flat = [100.0] * 12
    return dict(settings=dict(steps=120), variants={
        "baseline": entry(1000, [fake_run(0, 0.5, 1.0, flat[:2] + [80.0] * 10),
                                 fake_run(1, 0.7, 1.2, flat[:2] + [84.0] * 10)]),
        "no_skip": entry(1000, [fake_run(0, 0.6, 1.1, flat[:2] + [90.0] * 10),
                                fake_run(1, 0.4, 0.9, flat[:2] + [94.0] * 10)]),
        "half": entry(250, [fake_run(0, 0.6, 1.1, flat[:2] + [70.0] * 10),
                            fake_run(1, 0.6, 1.1, flat[:2] + [82.0] * 10)]),
    })


def test_summary_means_and_ranges():
    s = lp.summary(fake_results())
    assert s["baseline"]["loss"] == (82.0, 80.0, 84.0)
    assert s["no_skip"]["accuracy"] == pytest.approx((0.5, 0.4, 0.6),
                                                     rel=1e-12, abs=0)   # float sums
    assert s["half"]["parameters"] == 250 and s["half"]["seeds"] == [0, 1]


def test_a_difference_is_claimed_only_outside_the_seed_spread():
    v = lp.verdicts(fake_results())
    assert v == {"baseline": "within the seed spread", "no_skip": "higher",
                 "half": "within the seed spread"}          # 70–82 overlaps 80–84
    assert lp.verdicts(fake_results(), "accuracy")["no_skip"] == "within the seed spread"
    with pytest.raises(ValueError, match="measure"):
        lp.verdicts(fake_results(), "speed")
    one_seed = fake_results()
    del one_seed["variants"]["no_skip"]["runs"][1]
    assert lp.verdicts(one_seed)["no_skip"] == "one seed: no verdict"


def test_table_prints_mean_and_range():
    text = repr(lp.table(fake_results()))
    assert "82.0 [80.0, 84.0]" in text and "(a) no skip connections" in text
    assert "120 steps a run" in text and "61×61" in text
    assert "last 100 steps" in text               # 10 of 12 points, 10 steps each


def test_loss_figure_draws_the_mean_over_seeds_at_the_window_centres():
    results = fake_results()
    fig = lp.loss_figure(results)
    assert isinstance(fig, Figure)
    lines = fig.axes[0].get_lines()
    labels = [lp.LABELS[n] for n in results["variants"]]
    assert [ln.get_label() for ln in lines] == labels
    curves = np.array([r["loss_curve"] for r in results["variants"]["no_skip"]["runs"]])
    x, y = lines[1].get_data()
    np.testing.assert_allclose(y, curves.mean(0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(x, (np.arange(12) + 0.5) * 120 / 12, rtol=1e-12, atol=0)


def test_samples_figure_shows_the_stored_grey_levels():
    results = fake_results()
    fig = lp.samples_figure(results)
    assert len(fig.axes) == 3
    drawn = fig.axes[0].get_images()[0].get_array()
    images = results["variants"]["baseline"]["samples"]["images"]
    stored = np.concatenate(images, axis=1)
    assert np.array_equal(np.asarray(drawn), stored)


def test_load_refuses_a_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="miniature.lab"):
        lp.load(tmp_path / "none.json")
    (tmp_path / "empty.json").write_text(json.dumps({"variants": {}}))
    with pytest.raises(ValueError, match="no variant"):
        lp.load(tmp_path / "empty.json")


def test_reproduction_compares_with_the_shipped_training(tmp_path):
    results = fake_results()
    losses = [100.0] * 20 + [80.0] * 100             # 120 steps -> 12 windows of 10
    (tmp_path / "t.json").write_text(json.dumps(dict(settings=dict(seed=0),
                                                     unet_loss=losses + [1.0] * 50)))
    results["variants"]["baseline"]["runs"][0]["loss_curve"] = [100.0] * 2 + [80.8] * 10
    assert lp.reproduction(results, tmp_path / "t.json") == pytest.approx(
        0.01, rel=1e-9, abs=0)                       # 80.8 against 80: float division
    verdict = repr(lp.verdict_table(results))
    assert "(a) no skip connections  higher" in verdict


def test_rerun_table_places_each_rerun_in_the_stored_range():
    results = fake_results()                   # baseline: loss 80–84, accuracy 0.5–0.7
    same = json.loads(json.dumps(results["variants"]["baseline"]["runs"][0]))
    same["train_seconds"] = 9.0                # the time may differ; nothing else
    near = fake_run(1, 0.6, 1.2, [100.0] * 2 + [83.0] * 10)
    rerun = dict(settings=dict(results["settings"], seeds=[0, 1]), threads=1,
                 variants={"baseline": dict(runs=[same, near])})
    rows = lp.rerun_rows(results, rerun)
    assert [(r["seed"], r["identical"], r["loss"], r["accuracy"]) for r in rows] == [
        (0, True, (80.0, 80.0), (0.5, 0.5)), (1, False, (84.0, 83.0), (0.7, 0.6))]
    assert all(r["loss_within"] and r["accuracy_within"] for r in rows)
    table = lp.rerun_table(results, rerun)
    assert table.all_ok and "identical" in repr(table) and "-1.0e+00" in repr(table)
    assert "final loss [80.0000, 84.0000], accuracy [0.50, 0.70]" in repr(table)
    near["loss_curve"] = [100.0] * 2 + [85.0] * 10          # above the stored 84
    assert not lp.rerun_table(results, rerun).all_ok
    assert not lp.rerun_rows(results, rerun)[1]["loss_within"]


def test_rerun_with_other_settings_or_seeds_is_refused():
    results = fake_results()
    run = fake_run(0, 0.5, 1.0, [80.0] * 12)
    other = dict(settings=dict(steps=60), variants={"baseline": dict(runs=[run])})
    with pytest.raises(ValueError, match="other settings than the stored lab: steps"):
        lp.rerun_rows(results, other)
    unseen = dict(settings=dict(steps=120), variants={"baseline": dict(
        runs=[fake_run(5, 0.5, 1.0, [80.0] * 12)])})
    with pytest.raises(ValueError, match="no run of baseline, seed 5"):
        lp.rerun_rows(results, unseen)
