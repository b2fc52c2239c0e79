"""Build of the one compiled module, the RDB fingerprint fast path (everything else is in
pyproject.toml). ``optional=True``: without a C compiler the install still succeeds and the
pure-Python parser, which gives the same results, is what runs."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "affidavit.formats.rdb._native",
            ["src/affidavit/formats/rdb/_native.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
