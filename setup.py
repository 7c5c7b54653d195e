"""The optional C extension; all other packaging metadata is in pyproject.toml.

``servekit._numbers`` parses large numeric JSON arrays of V2 requests straight
into numpy buffers (see ``servekit/protocols/json_numbers.py``). It is optional:
without a C compiler servekit still installs and works, decoding such bodies
more slowly through orjson.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "servekit._numbers",
            sources=["src/servekit/_speedups/numbers.c"],
            # float parsing relies on exactly one rounding per operation
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
