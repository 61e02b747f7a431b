"""Bootstrap confidence intervals: how sure a figure measured on 40-60 questions is, and whether a
difference between two runs of the same questions is more than noise (paired bootstrap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0  # fixed: the same run gives the same interval every time

Statistic = Callable[[np.ndarray], np.ndarray]  # rows of resampled values -> one figure per row


def mean(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=-1)


def percentile(q: float) -> Statistic:
    return lambda samples: np.percentile(samples, q, axis=-1)


def _bounds(figures: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(figures, [tail, 100 - tail])
    return float(low), float(high)


def interval(values: Sequence[float], statistic: Statistic = mean, resamples: int = RESAMPLES,
             level: float = LEVEL, seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic` over the questions' values (None without values)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    rows = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    return _bounds(statistic(data[rows]), level)


def paired_difference(a: Sequence[float], b: Sequence[float], statistic: Statistic = mean, resamples: int = RESAMPLES,
                      level: float = LEVEL, seed: int = SEED) -> dict | None:
    """B - A over the same questions (`a[i]` and `b[i]` are one question's values in each run): the
    difference, its paired bootstrap interval, and a two-sided p-value for "no difference"."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.size == 0 or first.size != second.size:
        return None
    rows = np.random.default_rng(seed).integers(0, first.size, size=(resamples, first.size))
    differences = statistic(second[rows]) - statistic(first[rows])
    delta = float(statistic(second) - statistic(first))
    low, high = _bounds(differences, level)
    # How often a resample lands on the other side of zero: both tails, as a share of the resamples.
    p = 1.0 if np.all(differences == 0) else min(1.0, 2 * min(np.mean(differences <= 0), np.mean(differences >= 0)))
    return {"delta": delta, "low": low, "high": high, "p": float(p), "n": int(first.size)}
