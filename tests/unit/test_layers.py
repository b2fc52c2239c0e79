"""The layer rules of DESIGN.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "affidavit"

# package prefix -> layer number (longest prefix wins)
LAYERS: dict[str, int] = {
    "affidavit": 0,  # the package's __init__
    "affidavit.__main__": 5,  # `python -m affidavit` is the CLI
    "affidavit.errors": 0,
    "affidavit.closing": 0,
    "affidavit.constants": 0,
    "affidavit.durable": 0,
    "affidavit.input_files": 0,
    "affidavit.private_temp": 0,
    "affidavit.processes": 0,
    "affidavit.render": 0,  # the chart component and recorded texts (report and web pages)
    "affidavit.models": 1,
    "affidavit.crypto": 1,
    "affidavit.config": 1,
    "affidavit.engines": 2,
    "affidavit.formats": 2,
    "affidavit.vaults": 2,
    "affidavit.keystores": 2,
    "affidavit.catalog": 2,
    "affidavit.scratch": 2,
    "affidavit.fingerprint": 3,
    "affidavit.ledger": 3,
    "affidavit.policy": 3,
    "affidavit.evidence": 3,
    "affidavit.services": 4,
    "affidavit.cli": 5,
    "affidavit.server": 5,
    "affidavit.scheduler": 5,
}
# L5 may import only these from below
L5_ALLOWED = (
    "affidavit.services",
    "affidavit.models",
    "affidavit.errors",
    "affidavit.constants",
    "affidavit.config",
    "affidavit.processes",  # the server's worker supervisor: workers die with it
    "affidavit.render",
    "affidavit.cli",
    "affidavit.server",
    "affidavit.scheduler",
)
# packages whose modules are interchangeable backends: siblings never import each other
PLUGGABLE = (
    "affidavit.engines",
    "affidavit.formats",
    "affidavit.vaults",
    "affidavit.keystores",
    "affidavit.scratch",
)
# L3 may import from L2 only the interfaces
L2_INTERFACES = (
    "affidavit.engines.base",
    "affidavit.formats.base",
    "affidavit.vaults.base",
    "affidavit.keystores.base",
)

# third-party module -> the only affidavit packages/modules allowed to import it
RESTRICTED: dict[str, tuple[str, ...]] = {
    "hashlib": ("affidavit.crypto",),
    "hmac": ("affidavit.crypto",),
    "secrets": ("affidavit.crypto",),
    "cryptography": ("affidavit.crypto",),
    "pyrage": ("affidavit.crypto",),
    "pymongo": ("affidavit.engines.mongodb",),
    "bson": ("affidavit.engines.mongodb", "affidavit.formats"),
    "redis": ("affidavit.engines.redis",),
    "boto3": ("affidavit.vaults.s3", "affidavit.keystores.kms"),
    "botocore": ("affidavit.vaults.s3", "affidavit.keystores.kms"),
    "sqlalchemy": ("affidavit.catalog",),
    "alembic": ("affidavit.catalog",),
    "typer": ("affidavit.cli",),
    "rich": ("affidavit.cli", "affidavit.server"),
    "fastapi": ("affidavit.server",),
    "starlette": ("affidavit.server",),
    "uvicorn": ("affidavit.server.run", "affidavit.server.workers", "affidavit.server.http_limits"),
    "httpx": (),  # a test client only
    "jinja2": ("affidavit.evidence.report", "affidavit.server"),
    "argon2": ("affidavit.crypto",),
    "joserfc": ("affidavit.crypto",),  # ID tokens of single sign-on (crypto/oidc.py)
    "pyotp": ("affidavit.crypto",),
    "ua_parser": ("affidavit.services.access_log",),
    "qrcode": ("affidavit.cli",),
    "icalendar": ("affidavit.services.calendar_ics",),  # the governance calendar's .ics feed
    "dask": ("affidavit.services.verify.cluster",),  # verify --cluster
    "distributed": ("affidavit.services.verify.cluster",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = mod.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                yield ".".join([*base, node.module] if node.module else base), node.lineno
            elif node.module:
                yield node.module, node.lineno


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations() -> list[str]:
    found: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # alembic scripts belong to the catalog
        mod = module_name(path)
        mine = layer_of(mod)
        family = ".".join(mod.split(".")[:3])  # e.g. affidavit.engines.mongodb
        for target, line in imports(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(SRC)}:{line} imports {target}"
            if top in RESTRICTED and not within(mod, RESTRICTED[top]):
                found.append(f"{where}: only {RESTRICTED[top]} may import {top}")
            if top != "affidavit" or target == "affidavit":
                continue
            theirs = layer_of(target)
            if theirs > mine:
                found.append(f"{where}: layer {mine} must not import layer {theirs}")
            if mine == 5 and not within(target, L5_ALLOWED):
                found.append(
                    f"{where}: the CLI/server may only use services, models, errors, config"
                )
            if mine == 3 and theirs == 2 and not within(target, L2_INTERFACES):
                found.append(f"{where}: layer 3 uses only layer-2 interfaces (base modules)")
            if mine == 2 and theirs == 2 and within(mod, PLUGGABLE):
                sibling = ".".join(target.split(".")[:3])
                pkg = ".".join(mod.split(".")[:2])
                same_pkg = target.startswith(pkg + ".")
                if same_pkg and sibling != family and not target.endswith(".base"):
                    found.append(f"{where}: sibling backends must not import each other")
    return found


def test_layer_rules_hold() -> None:
    problems = violations()
    assert not problems, "layer rules broken:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "target", "expected"),
    [
        ("affidavit.cli.x", "affidavit.engines.redis", "CLI"),
        ("affidavit.models.x", "affidavit.services.x", "layer 1 must not import layer 4"),
        ("affidavit.engines.redis", "affidavit.engines.mongodb", "sibling"),
        ("affidavit.services.x", "hashlib", "only"),
        ("affidavit.ledger.x", "affidavit.engines.redis", "layer 3 uses only"),
    ],
)
def test_the_checker_catches_a_breach(
    tmp_path: Path, module: str, target: str, expected: str
) -> None:
    # build a tiny fake tree with one offending module and run the same checker on it
    fake_src = tmp_path / "src"
    path = fake_src / Path(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(f"import {target}\n")
    globals_ = globals()
    old_src, old_pkg = globals_["SRC"], globals_["PKG"]
    globals_["SRC"], globals_["PKG"] = fake_src, fake_src / "affidavit"
    try:
        problems = violations()
    finally:
        globals_["SRC"], globals_["PKG"] = old_src, old_pkg
    assert any(expected in p for p in problems), problems


# --- digests computed in C -------------------------------------------------------------------
#
# RESTRICTED keeps hashlib (and every other crypto library) to affidavit.crypto, but it walks
# Python imports: a C module computes a digest without importing anything. These C files do,
# and are allowed to, because
#
# - the digest is the same SHA-256, computed through the very libcrypto that Python's hashlib
#   loaded (OpenSSL's EVP interface, found with dlsym in the process, never another copy) or
#   through hashlib.sha256 itself, called from C, when that is not there
#   (formats/_sha256_evp.h): no other implementation and no other primitive;
# - the crypto layer's rule is about Python modules, the one place that chooses and wires
#   primitives (keys, signatures, encryption); these files choose nothing: they compute the
#   record digests that affidavit.crypto.record_digest.RecordHasher defines, faster;
# - their bytes are pinned by tests: the compiled fingerprint passes equal RecordHasher's
#   pairs on every input (tests/unit/formats/test_rdb_native.py, test_bson_native.py, on
#   hostile input too), and the fingerprints and index files of fixed inputs are pinned
#   (tests/unit/pinned), with the compiled modules and without (AFFIDAVIT_PURE_PYTHON=1).
#
# Any other C or header file that computes a digest fails test_c_digests_stay_in_the_allow_list.

#: C and header files (relative to src/) allowed to compute a digest, and what they compute
C_DIGEST_ALLOWED: dict[str, str] = {
    "affidavit/formats/_sha256_evp.h": "SHA-256 through OpenSSL EVP in hashlib's libcrypto, "
    "else hashlib.sha256: the one helper the compiled passes share",
    "affidavit/formats/rdb/_native.c": "the RDB fingerprint pass: key_hash || record_hash",
    "affidavit/formats/bson_codec/_native.c": "the BSON exact pass: key_hash || record_hash",
}
#: what computing a digest looks like in C (outside comments): OpenSSL's EVP interface or
#: libcrypto, a SHA, MD5 or BLAKE2 name (the shared helper's functions included), hashlib
C_DIGEST_USE = re.compile(
    r"EVP_|libcrypto|openssl|SHA-?(?:1|224|256|384|512)|MD5|BLAKE2|hashlib", re.IGNORECASE
)
# a C string or character literal (kept: dlsym names are strings), or a comment (dropped)
_C_TOKENS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.DOTALL)


def c_digest_users(src: Path) -> dict[str, list[str]]:
    """Every ``*.c`` and ``*.h`` file under ``src/affidavit`` that computes a digest: its path
    relative to ``src`` and the digest names it uses, comments left out."""
    found: dict[str, list[str]] = {}
    for path in sorted([*(src / "affidavit").rglob("*.c"), *(src / "affidavit").rglob("*.h")]):
        code = _C_TOKENS.sub(
            lambda m: " " if m.group().startswith("/") else m.group(), path.read_text()
        )
        names = sorted({m.group() for m in C_DIGEST_USE.finditer(code)})
        if names:
            found[path.relative_to(src).as_posix()] = names
    return found


def test_c_digests_stay_in_the_allow_list() -> None:
    users = c_digest_users(SRC)
    outside = {path: names for path, names in users.items() if path not in C_DIGEST_ALLOWED}
    assert not outside, (
        "C code outside C_DIGEST_ALLOWED computes a digest (crypto belongs to "
        f"affidavit.crypto; see the comment above C_DIGEST_ALLOWED): {outside}"
    )
    stale = sorted(set(C_DIGEST_ALLOWED) - set(users))
    assert not stale, f"allowed but computing no digest (or gone): drop them from the list: {stale}"


def test_the_c_digest_scan_catches_a_breach(tmp_path: Path) -> None:
    pkg = tmp_path / "affidavit" / "engines"
    pkg.mkdir(parents=True)
    (pkg / "fast.c").write_text(
        "#include <Python.h>\n/* SHA-256 is computed elsewhere; EVP_ is not used here */\n"
        "// nor hashlib\nstatic int f(void) { return 0; }\n"
    )
    (pkg / "hash.h").write_text('void *md = dlsym(lib, "EVP_sha256");\n')
    (pkg / "sha.c").write_text("static void g(void) { SHA256_Update(&ctx, p, n); }\n")
    found = c_digest_users(tmp_path)
    assert set(found) == {"affidavit/engines/hash.h", "affidavit/engines/sha.c"}
