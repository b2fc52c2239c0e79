"""Build of the compiled modules: the fingerprint fast paths of RDB files and of mongodump
``.bson`` files, and the index-entry assembly (everything else is in pyproject.toml).
``optional=True``: without a C compiler the install still succeeds and the pure-Python code,
which gives the same results, is what runs. The two fast paths hash with the SHA-256 of
``formats/_sha256_evp.h``."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
_SHA256 = ["src/affidavit/formats/_sha256_evp.h"]

setup(
    ext_modules=[
        Extension(
            "affidavit.formats.rdb._native",
            ["src/affidavit/formats/rdb/_native.c"],
            depends=_SHA256,
            extra_compile_args=_FLAGS,
            optional=True,
        ),
        Extension(
            "affidavit.fingerprint._native",
            ["src/affidavit/fingerprint/_native.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        ),
        Extension(
            "affidavit.formats.bson_codec._native",
            ["src/affidavit/formats/bson_codec/_native.c"],
            depends=_SHA256,
            extra_compile_args=_FLAGS,
            optional=True,
        ),
    ]
)
