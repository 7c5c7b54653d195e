"""The optional C extensions; all other packaging metadata is in pyproject.toml.

``servekit._numbers`` parses large numeric JSON arrays of V2 requests straight
into numpy buffers (see ``servekit/protocols/json_numbers.py``);
``servekit._trees`` walks flattened tree ensembles to their leaves (see
``servekit/runtimes/sklearn_fast.py`` and ``xgboost_fast.py``);
``servekit._linear`` scores rows of linear classifiers and picks their classes
in one call, saying when rounding cannot change the answer (see
``sklearn_fast.py``). All are optional: without a C compiler servekit still
installs and works, doing the same with numpy, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "servekit._numbers",
            sources=["src/servekit/_speedups/numbers.c"],
            # float parsing relies on exactly one rounding per operation
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
        Extension(
            "servekit._trees",
            sources=["src/servekit/_speedups/trees.c"],
            depends=["src/servekit/_speedups/buffers.h"],
            # float32 sums in XGBoost's order, one rounding per add
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        ),
        Extension(
            "servekit._linear",
            sources=["src/servekit/_speedups/linear.c"],
            depends=["src/servekit/_speedups/buffers.h"],
            # -O3: the fixed-size class blocks unroll fully, their accumulators
            # in registers. No -march/-mavx*: the AVX2 and AVX-512 kernels are
            # compiled per function (target attributes) and picked at import
            # from the CPU's features, so the module runs on any x86-64. No
            # -ffast-math: it would let the compiler drop the NaN/infinity
            # checks. -ffp-contract=off: the certainty check's own arithmetic
            # rounds once per operation, as its error analysis assumes (the dot
            # products use explicit FMAs where the CPU has them; the bound
            # holds for any summation order, fused or not).
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
    ]
)
