"""The forward loop as one GPU kernel (Pallas, Triton backend): each program holds a block of paths' state in
registers over all the steps of a reporting interval.

XLA compiles the step of the scanned loop into kernels that each read the state from memory and write it back
once a step (three on an H200, moving ~170 floats a path-step): the loop is bound by memory bandwidth. Here
the whole interval is one kernel: it reads the state once, makes each step's draws (`draws_at`, the same
counter-based generator as the XLA loop) and runs `step` on them in registers, and writes the state once. The
values are those of the XLA loop (the same functions, traced on blocks of paths instead of under `vmap`); the
step's constants (`Prep` and the regime tables) are packed into one vector and read as scalars.

Forward only: gradients use the XLA loop (`horizon_metrics`). On a CPU the kernel runs only in Pallas'
interpreter (tests); `_simulate.KERNEL` decides where it is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from ._model import Prep, State, _regime_tables, step

# The float32 normal quantile's log and square root by the GPU's approximate instructions (lg2.approx, sqrt.approx:
# documented errors ~2^-22) instead of libdevice's: +6% on an H100 (11.81e9 against 11.11e9 path-steps/s, 4M paths
# x 252 steps), +2.5% on an H200; paths agree with the CPU's to 1e-4 (scripts/device_check.py, H100).
FAST_MATH = True
BLOCK_PATHS = 128  # paths a program: one per thread at 4 warps, so the state stays in registers
NUM_WARPS = 4


def _pack(tree, dtype):
    """(vector, rebuild): the leaves of `tree` (float arrays) raveled into one vector padded to a power of two
    (Triton's block shapes), and rebuild(ref) -> the tree with each leaf a scalar (0-d leaves) or a numpy object
    array of scalars loaded from the vector's ref (indexed like the leaf: `table[r]`, `cum_p[:, q]`)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    for x in leaves:
        if jnp.result_type(x) != dtype:
            raise TypeError(f"kernel constants must be {dtype}, got a leaf of {jnp.result_type(x)}")
    flat = [jnp.ravel(x) for x in leaves]
    n = sum(int(np.size(x)) for x in leaves)
    size = 1 << max(n - 1, 1).bit_length()
    vec = jnp.concatenate(flat + [jnp.zeros((size - n,), dtype)])

    def rebuild(ref):
        out, o = [], 0
        for x in leaves:
            shape = np.shape(x)
            k = int(np.prod(shape, dtype=int))
            if not shape:
                out.append(ref[o])
            else:
                arr = np.empty(k, dtype=object)
                for i in range(k):
                    arr[i] = ref[o + i]
                out.append(arr.reshape(shape))
            o += k
        return jax.tree_util.tree_unflatten(treedef, out)

    return vec, rebuild


def _approx(op: str, x):
    """The PTX instruction `op`.approx.f32 applied to x (float32) elementwise."""
    from jax.experimental.pallas import triton as plt

    return plt.elementwise_inline_asm(f"{op}.approx.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
                                      result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])[0]


def _fast_icdf() -> dict:
    """log and sqrt for `_simulate._normal_icdf32` by approximate instructions: log x = log(2) lg2 x."""
    return {"log": lambda x: _approx("lg2", x) * np.float32(np.log(2.0)), "sqrt": lambda x: _approx("sqrt", x)}


def _like(x) -> jax.ShapeDtypeStruct:
    """The shape and dtype of x, and under `shard_map` the mesh axes it varies over (which `pallas_call` needs
    for its outputs there; `manual_axis_type` in newer JAX, `vma` before)."""
    aval = jax.typeof(x)
    for name in ("manual_axis_type", "vma"):
        if getattr(aval, name, None) is not None:
            try:
                return jax.ShapeDtypeStruct(x.shape, x.dtype, **{name: getattr(aval, name)})
            except TypeError:
                continue
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def advance(prep: Prep, state: State, key_words: jax.Array, ids: jax.Array, lo, hi, draws_at,
            interpret: bool = False, step_fn=step) -> State:
    """The state of a batch of paths (leaves of shape (paths,)) after steps lo .. hi - 1, with the draws of
    `draws_at(k0, k1, ids, t, dtype)` (`_simulate.draws_at`): the XLA loop's `fori_loop(lo, hi, step)`, as one
    kernel. `key_words`: the key's two uint32 words; `ids`: each path's counter (uint32, (paths,)). `step_fn`:
    `step` (other steps measure the kernel's parts, scripts/benchmark.py)."""
    dtype = prep.one.dtype
    consts, rebuild = _pack((prep, _regime_tables(prep)), dtype)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    n_paths = ids.shape[0]
    block = min(BLOCK_PATHS, n_paths)
    if n_paths % block:
        raise ValueError(f"the kernel needs a multiple of {block} paths, got {n_paths}")
    bounds = jnp.stack([jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32)])
    n = len(leaves)
    dt = prep.dt

    def kernel(c_ref, k_ref, b_ref, id_ref, *refs):
        prep_s, tables = rebuild(c_ref)
        k0, k1 = k_ref[0], k_ref[1]
        path_ids = id_ref[...]

        icdf = _fast_icdf() if FAST_MATH and not interpret and dtype == jnp.float32 else {}

        def body(t, s):
            normal, uniform = draws_at(k0, k1, path_ids, t, dtype, **icdf)
            return step_fn(prep_s, t * dt, s, normal, uniform, tables=tables)

        s = jax.tree_util.tree_unflatten(treedef, [r[...] for r in refs[:n]])
        s = jax.lax.fori_loop(b_ref[0], b_ref[1], body, s)
        for r, x in zip(refs[n:], jax.tree_util.tree_leaves(s), strict=True):
            r[...] = x

    whole = [pl.BlockSpec(x.shape, lambda i: (0,)) for x in (consts, key_words, bounds)]
    per_path = pl.BlockSpec((block,), lambda i: (i,))
    kwargs = {}
    if not interpret:
        from jax.experimental.pallas import triton as plt

        kwargs["compiler_params"] = plt.CompilerParams(num_warps=NUM_WARPS, num_stages=1)
    out = pl.pallas_call(
        kernel,
        out_shape=[_like(x) for x in leaves],
        grid=(n_paths // block,),
        in_specs=whole + [per_path] * (1 + n),
        out_specs=[per_path] * n,
        input_output_aliases={4 + i: i for i in range(n)},
        interpret=interpret,
        name="jaxstress_interval",
        **kwargs,
    )(consts, key_words, bounds, ids, *leaves)
    return jax.tree_util.tree_unflatten(treedef, out)
