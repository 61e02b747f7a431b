"""rag/stats.py: bootstrap intervals that cover what they claim, and paired differences that see noise as noise."""

from __future__ import annotations

import numpy as np

from rag import stats


def test_the_interval_covers_the_true_share_about_95_times_in_100():
    rng = np.random.default_rng(42)
    truth, covered, trials = 0.7, 0, 200
    for trial in range(trials):
        sample = rng.random(60) < truth  # 60 questions, each right with probability 0.7
        low, high = stats.interval(sample.astype(float), resamples=500, seed=trial)
        covered += low <= truth <= high
    assert 0.89 <= covered / trials <= 0.99, covered


def test_identical_runs_differ_by_nothing_and_a_real_change_is_seen():
    rng = np.random.default_rng(7)
    run = rng.random(50)
    same = stats.paired_difference(run, run.copy())
    assert same["delta"] == 0 and same["low"] <= 0 <= same["high"] and same["p"] == 1.0
    better = stats.paired_difference(run, run + 0.2 + rng.normal(0, 0.05, 50))
    assert better["low"] > 0 and better["p"] < 0.01 and abs(better["delta"] - 0.2) < 0.03
    noise = stats.paired_difference(run, run + rng.normal(0, 0.2, 50))
    assert noise["low"] < 0 < noise["high"] and noise["p"] > 0.05


def test_a_percentile_has_an_interval_too_and_empty_input_has_none():
    latencies = np.arange(1, 101, dtype=float)
    low, high = stats.interval(latencies, stats.percentile(50))
    assert low < 50.5 < high
    assert stats.interval([]) is None and stats.paired_difference([], []) is None
