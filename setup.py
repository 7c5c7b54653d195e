"""The optional C extensions; all other packaging metadata is in pyproject.toml.

``servekit._numbers`` parses large numeric JSON arrays of V2 requests straight
into numpy buffers (see ``servekit/protocols/json_numbers.py``);
``servekit._trees`` walks flattened tree ensembles to their leaves (see
``servekit/runtimes/sklearn_fast.py`` and ``xgboost_fast.py``). Both are
optional: without a C compiler servekit still installs and works, doing the
same with numpy, more slowly.
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
            # float32 sums in XGBoost's order, one rounding per add
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        ),
    ]
)
