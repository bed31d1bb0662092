"""scripts/profile_run.py attributes compiled kernels to the parts of the model they were traced from."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import profile_run  # noqa: E402

from jaxstress._curve import loadings  # noqa: E402
from jaxstress._simulate import threefry2x32  # noqa: E402


def test_kernels_are_attributed_to_their_source_functions():
    def f(x, k):
        bits, _ = threefry2x32(k[0], k[1], jnp.arange(1024, dtype=jnp.uint32), jnp.zeros(1024, jnp.uint32))
        b, c, g = loadings(x, 0.3, 0.5, 1.2)
        return bits, b * c + g

    hlo = jax.jit(f).lower(jnp.linspace(0.5, 30.0, 1024), np.array([1, 2], np.uint32)).compile().as_text()
    parts = profile_run.kernel_parts(hlo)
    seen = {p for shares in parts.values() for p, share in shares.items() if share > 0}
    assert {"random numbers", "curve"} <= seen
    for shares in parts.values():
        assert abs(sum(shares.values()) - 1.0) < 1e-9


def test_part_of_takes_the_innermost_known_function():
    here = "/x/jaxstress/_simulate.py"
    assert profile_run.part_of([(here, "_BlockDraws._value"), (here, "_simulate")]) == "random numbers"
    assert profile_run.part_of([("/x/jax/_src/numpy.py", "where"), ("/x/jaxstress/_model.py", "step")]) == "step"
    assert profile_run.part_of([(here, "_simulate")]) == "loops, copies, other"
