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


def test_phase_block_reads_op_names():
    """The phase (forward; in the backward pass the segments' rerun, the step recomputed, the step transposed) and
    the block (named scope) of an instruction, from op names as XLA keeps them."""
    p = profile_run.PHASES
    loop = "jit(g)/transpose(jvp())/while/body/closed_call/while/body/closed_call/"
    assert profile_run.phase_block("jit(f)/while/body/vmap(holders)/mul", "step") == (p[0], "step: holders")
    assert profile_run.phase_block("jit(g)/jvp()/while/body/closed_call/draws/jit(_where)/select_n", "x") == (
        p[0], "random numbers")
    assert profile_run.phase_block(loop + "vmap(debt)/sub", "x") == (p[1], "step: debt")
    assert profile_run.phase_block(loop + "jit(dynamic_update_index_in_dim)/dynamic_update_slice", "x") == (p[1], "x")
    assert profile_run.phase_block(loop + "jvp(vmap(macro))/mul", "x") == (p[2], "step: macro")
    assert profile_run.phase_block(loop + "jvp(regime_lookup)/dot_general", "x") == (
        p[2], "regime tables (reverse mode)")
    assert profile_run.phase_block(loop + "transpose(jvp(vmap(curve)))/reduce_sum", "x") == (p[3], "step: curve")
    assert profile_run.phase_block(loop + "transpose(jvp())/scatter-add", "x") == (p[3], "x")


def test_step_blocks_reach_the_compiled_program():
    """Every named block of the model's step is in the op names of a compiled batched step."""
    from jaxstress._config import load_scenario
    from jaxstress._model import initial_state, prepare, step
    from jaxstress._simulate import broadcast_paths

    params = load_scenario("april_2025").params()
    prep = prepare(params)
    state = broadcast_paths(initial_state(prep, params.initial_regime), 8)
    draws = tuple(jnp.full(8, 0.3) for _ in range(10)), tuple(jnp.full(8, 0.5) for _ in range(2))
    hlo = jax.jit(jax.vmap(step, in_axes=(None, None, 0, 0, 0))).lower(prep, 0.0, state, *draws).compile().as_text()
    seen = {b for ks in profile_run.kernel_blocks(hlo).values() for _, b in ks}
    missing = {"step: " + b for b in profile_run.BLOCKS if b not in profile_run._OUTSIDE} - seen
    assert not missing, f"blocks not found in the compiled step: {missing}"


def test_xla_output_cost_prints_both_forms(capsys):
    """scripts/xla_output_cost.py runs and prints a finite, positive cost for both forms (tiny sizes: a smoke test;
    its figures are measurements, docs/PERFORMANCE.md)."""
    import re

    import xla_output_cost

    assert xla_output_cost.main(["--paths", "256", "--outputs", "3", "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    costs = {m.group(1): float(m.group(2)) for m in re.finditer(r"(separate|stacked)\s+([\d.]+) ns", out)}
    assert set(costs) == {"separate", "stacked"} and all(0 < c < 1e6 for c in costs.values()), out
