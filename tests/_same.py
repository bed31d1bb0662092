"""One comparison for runs that must give the same paths: per-path metrics, snapshots and the summary."""

import numpy as np
import pytest

from jaxstress._metrics import summarize
from jaxstress._simulate import METRIC_NAMES


def assert_same_results(res, ref):
    """res and ref (SimulationResults of the same seed and paths) agree per path and in every summary figure,
    to 1e-6 relative (float32 rounding differs between compiled programs; see the callers)."""
    assert res.n_paths == ref.n_paths and res.variables == ref.variables and res.reports == ref.reports
    for name in METRIC_NAMES:
        np.testing.assert_allclose(res.metrics[name], ref.metrics[name], rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(res.snapshots, ref.snapshots, rtol=1e-6, atol=1e-9)
    s_ref, s_res = summarize(ref.metrics), summarize(res.metrics)
    assert s_ref.keys() == s_res.keys()
    for key in s_ref:
        for field in ("value", "stderr"):
            assert s_res[key][field] == pytest.approx(s_ref[key][field], rel=1e-6, abs=1e-9), (key, field)
