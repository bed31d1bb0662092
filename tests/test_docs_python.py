"""docs/PYTHON.md's examples run as they stand, in order, in one namespace, and do what the text says of them."""

import re
from pathlib import Path

import numpy as np
import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "PYTHON.md"


@pytest.fixture(scope="module")
def guide():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 4, "docs/PYTHON.md shows fewer examples than it should"
    ns: dict = {"__name__": "guide"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE}:block {i + 1}", "exec"), ns)
    return ns


def test_the_guide_uses_public_names_only():
    import jaxstress

    code = "\n".join(re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S))
    assert not re.search(r"jaxstress\._", code), "an example uses a private module"
    for name in re.findall(r"\bjaxstress\.([A-Za-z_]\w*)", code):
        assert hasattr(jaxstress, name), f"the guide uses jaxstress.{name}, which does not exist"


def test_the_guide_runs_and_its_numbers_hold(guide):
    stats, y10 = guide["stats"], guide["y10"]
    # summarize's mean and standard error are those of the per-path values
    assert stats["y10_change_bp_mean"]["value"] == pytest.approx(float(np.mean(y10.astype(np.float64))), rel=1e-6)
    assert stats["y10_change_bp_mean"]["stderr"] == pytest.approx(np.std(y10, ddof=1) / np.sqrt(y10.size), rel=1e-3)
    stressed, params = guide["stressed"], guide["params"]
    c = np.asarray(stressed["regimes.tariff_shock.correlation"])
    assert c[0, 2] == c[2, 0] == pytest.approx(0.3)
    np.testing.assert_allclose(stressed["debt.amounts"], np.asarray(params["debt.amounts"]) * 1.1, rtol=1e-6)
    # the gradient of the whole Params by name: every driver's, finite; a higher term premium raises the 10y; a
    # correlation driver's is both of its entries' (`drivers` reads one, half of it: the model reads the
    # symmetrized matrix)
    import jaxstress

    by_name, grads = guide["by_name"], guide["grads"]
    assert set(by_name) == set(jaxstress.driver_names(params))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in by_name.values()) and guide["slope"] > 0
    k = "regimes.tariff_shock.correlation[1][3]"
    assert float(by_name[k]) == pytest.approx(2 * float(jaxstress.drivers(grads)[k]), rel=1e-6) != 0
    # the calibration reaches its target: within 3 standard errors of the 4,096 paths that check it, plus the
    # iterates' jitter (Adam moves the driver by up to its learning rate a step, times the metric's slope)
    se = float(np.std(y10, ddof=1)) / np.sqrt(4096)
    jitter = 2e-3 * abs(guide["slope"])
    assert abs(np.mean(guide["check"]) - guide["target"]) < 3 * se + jitter, (guide["check"], se, jitter)
    assert np.isfinite(guide["row"]["y10_change_bp"])
