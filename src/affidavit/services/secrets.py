"""Resolving secret references at connect time. Secrets are never stored or logged."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from affidavit.errors import InputError
from affidavit.input_files import open_regular
from affidavit.models.inventory import SecretKind, SecretRef

_MAX_SECRET_BYTES = 64 * 1024


def make_secret_ref(*, env: str | None, file: str | None) -> SecretRef | None:
    """Build a reference from ``--secret-env`` / ``--secret-file`` (at most one)."""
    if env and file:
        raise InputError(
            "give either --secret-env or --secret-file, not both",
            hint="one secret per source",
        )
    if env:
        if not (env[0].isalpha() or env[0] == "_") or not all(
            ch.isalnum() or ch == "_" for ch in env
        ):
            raise InputError(  # never echo it: it may be the secret itself
                "--secret-env takes the name of an environment variable, not its value",
                hint="name the variable, e.g. --secret-env MONGO_PASSWORD (not its value)",
            )
        return SecretRef(kind=SecretKind.ENV, locator=env)
    if file:
        return SecretRef(kind=SecretKind.FILE, locator=str(Path(file).expanduser().absolute()))
    return None


OWN_ENV_PREFIX = "AFFIDAVIT_"
_SYSTEM_TREES = (Path("/proc"), Path("/sys"))  # files that describe processes, not secrets


def own_secret_problem(ref: SecretRef, home: Path) -> str | None:
    """Why ``ref`` would hand one of affidavit's own secrets (or a process's) to a source,
    or None: a variable ``AFFIDAVIT_*``; a file that resolves into the home (its keys and
    settings) or into ``/proc`` or ``/sys`` (``/proc/self/environ`` is the whole
    environment)."""
    if ref.kind is SecretKind.ENV:
        if ref.locator.upper().startswith(OWN_ENV_PREFIX):
            return f"the variable {ref.locator} is one of affidavit's own settings"
        return None
    return _inside_own(Path(ref.locator).resolve(), home)


def _inside_own(target: Path, home: Path) -> str | None:
    for tree, what in (
        (home.resolve(), "affidavit's home, which holds its own keys"),
        *((t, "a system tree that describes processes") for t in _SYSTEM_TREES),
    ):
        if target == tree or tree in target.parents:
            return f"{target} lies inside {what}"
    return None  # fmt: skip


def resolve_source_secret(ref: SecretRef | None, *, home: Path) -> str | None:
    """A source's secret, read now, never one of affidavit's own (:func:`own_secret_problem`):
    checked when it is read, not only when the source was added, and again on the file
    actually opened, so a link repointed since then is refused too."""
    if ref is None:
        return None
    problem = own_secret_problem(ref, home)
    if problem is not None:
        raise InputError(
            f"this source's secret is refused: {problem}",
            hint="keep a source's password in its own variable or a file outside the home",
        )
    return resolve_secret(ref, home=home)


def resolve_secret(
    ref: SecretRef | None, environ: Mapping[str, str] | None = None, *, home: Path | None = None
) -> str | None:
    """The secret's value, read now; raise :class:`InputError` naming the reference (never the
    value) when it cannot be read. A secret file may be a symbolic link (mounted secrets are),
    but what it leads to must be a regular file (a named pipe never blocks), private to its
    owner and small."""
    if ref is None:
        return None
    if ref.kind is SecretKind.ENV:
        env = os.environ if environ is None else environ
        value = env.get(ref.locator)
        if value is None:
            raise InputError(
                f"the environment variable {ref.locator} (this source's secret) is not set",
                hint=f"export {ref.locator}=... before running affidavit",
            )
        return value
    path = Path(ref.locator)
    try:
        hint = f"make {path} a regular file (chmod 600) that holds only the secret"
        # a link is followed (mounted secrets, e.g. Kubernetes', are links to the file);
        # what it leads to must be a regular file only its owner can read
        with open_regular(path.resolve(strict=True), what="the secret file", hint=hint) as fh:
            if home is not None:  # the file opened, whatever links led to it meanwhile
                opened = Path(os.path.realpath(f"/proc/self/fd/{fh.fileno()}"))
                problem = _inside_own(opened, home)
                if problem is not None:
                    raise InputError(
                        f"this source's secret is refused: {problem}",
                        hint="keep a source's password in a file outside the home",
                    )
            info = os.fstat(fh.fileno())
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise InputError(
                    f"the secret file {path} is readable by other users",
                    hint=f"chmod 600 {path}",
                )
            data = fh.read(_MAX_SECRET_BYTES + 1)
        if len(data) > _MAX_SECRET_BYTES:
            raise InputError(f"the secret file {path} is too large to be a password")
        return data.decode("utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise InputError(
            f"the secret file {path} does not exist", hint="create it or fix --secret-file"
        ) from None
    except PermissionError:
        raise InputError(
            f"no permission to read the secret file {path}",
            hint="run affidavit as a user that can read it",
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"the secret file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(
            f"cannot read the secret file {path}: {exc.strerror or exc}",
            hint="check the file and the folders above it",
        ) from None
