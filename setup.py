"""The compiled part of the package: classifier._native (see classifier/_native.c).

Everything else is declared in pyproject.toml. The extension is optional: without a C compiler the
package still installs and classifier.model uses its pure-Python scorer; scripts/test sets
QINGLANG_REQUIRE_NATIVE=1 so that a test fails where the extension did not build.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "classifier._native",
            sources=["classifier/_native.c"],
            # No fused multiply-add: the same IEEE products and sums on every machine.
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
