"""bench.timing's summary: quantiles that interpolate like numpy's and never leave their order."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a repository tool, not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench.timing import quantile, summarize  # noqa: E402


@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_quantile_matches_numpy_linear(n, q):
    values = sorted(random.Random(n).uniform(0.01, 2.0) for _ in range(n))
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-12)


def test_quantile_of_nothing_is_nan():
    assert math.isnan(quantile([], 0.5))


def test_quantiles_stay_ordered_when_samples_nearly_tie():
    # Samples one ulp apart are what a quiet CPU timer produces; the two-product form
    # a*(1-f) + b*f put a p20 above its median on about 9% of such sets.
    rng = random.Random(0)
    for _ in range(20000):
        x = rng.uniform(0.01, 1.0)
        samples = [x + rng.choice([0.0, 1e-17, 5e-17]) * rng.randint(0, 2) for _ in range(rng.randint(3, 12))]
        st = summarize(samples, "thread_time")
        assert min(samples) <= st.p20_ms <= st.median_ms <= st.p80_ms <= max(samples), samples
