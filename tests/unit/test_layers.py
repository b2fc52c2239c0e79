"""The layer rules of DESIGN.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
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
    "affidavit.constants": 0,
    "affidavit.durable": 0,
    "affidavit.input_files": 0,
    "affidavit.private_temp": 0,
    "affidavit.processes": 0,
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
    "jinja2": ("affidavit.evidence.report", "affidavit.server"),
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
