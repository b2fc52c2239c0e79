"""Client mode: the CLI talking to an affidavit server instead of opening a home.

With ``--server URL`` (or ``AFFIDAVIT_SERVER``) a remote-capable command asks the server's
REST API for the same JSON view it would compute locally (:func:`view`), and prints it the
same way, with the same ``--json`` output and exit codes; the server's errors come back as
the same one-line message, hint and exit code. A command that is not remote-capable yet is
refused in client mode (it would otherwise act locally, as the unverified OS user) rather
than run against a home the user did not mean.

The session comes from ``affidavit login URL`` and is kept in
``$XDG_CONFIG_HOME/affidavit/session.json`` (default ``~/.config``), mode 0600 in a 0700
folder: the server's URL, the account, the session's id and secret. It is never written
through a symbolic link, never read from a file that others can read, and only ever sent to
the server it was issued by.

The HTTP client is the standard library's: HTTPS with certificate verification (a private CA:
``SSL_CERT_FILE``), plain HTTP only to a loopback address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import stat
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import typer

from affidavit import __version__
from affidavit.cli.state import app_for
from affidavit.constants import ExitCode
from affidavit.errors import (
    ApprovalPending,
    AuthenticationFailed,
    Error,
    InputError,
    OperationError,
)
from affidavit.models.progress import Reporter

if TYPE_CHECKING:
    from affidavit.services.context import App

SERVER_ENV: Final = "AFFIDAVIT_SERVER"
SERVER_META: Final = "affidavit.server"  # where the root callback keeps --server (ctx.meta)
API_PREFIX: Final = "/api/v1"
SESSION_FILENAME: Final = "session.json"
REMOTE_COMMANDS: Final = frozenset(
    {
        "backup list",
        "backup show",
        "backup run",
        "backup delete",
        "hold add",
        "hold release",
        "keys rotate",
        "keys export-identity",
        "source list",
        "source remove",
        "vault list",
        "verify list",
        "drill list",
        "user disable",
        "policy approve",
        "exception approve",
        "request list",
        "request show",
        "request approve",
        "request veto",
        "request cancel",
        "request execute",
        "request rules",
        "request rule-set",
        "access review start",
        "access review show",
        "access review decide",
        "access review close",
        "ledger show",
        "ledger verify",
        "ledger proof",
        "access-log show",
        "access-log verify",
        "finding list",
        "finding show",
        "finding ack",
        "finding resolve",
        "exception add",
        "exception revoke",
        "exception list",
        "policy propose",
        "policy list",
        "policy show",
        "policy check",
        "baseline approve",
        "baseline show",
        "due",
        "run-due",
        "user add",
        "user list",
        "role grant",
        "role revoke",
        "role list",
        "token create",
        "token list",
        "token revoke",
        "drill run",
        "source show",
        "ledger checkpoint",
        "inventory",
        "evidence build",
        "hold list",
        "vault show",
        "keys status",
        "ledger key",
        "ledger consistency",
        "dataset classify",
        "source add",
        "source test",
        "vault add",
        "user passwd",
        "user totp-enroll",
        "user totp-reset",
        "user unlock",
        "user link-oidc",
        "ledger export",
        "access-log export",
        "access-log expire",
        "calendar show",
        "calendar ics",
        "calendar add",
        "calendar remove",
        "progress publish",
        "recipient add",
        "recipient verify",
        "recipient list",
        "export spec add",
        "export spec approve",
        "export spec list",
        "export spec show",
        "export run",
        "export list",
        "audit open",
        "audit list",
        "audit show",
        "audit close",
        "audit remind",
        "audit request open",
        "audit request list",
        "audit request show",
        "audit request answer",
        "audit request accept",
        "audit request return",
        "audit request close",
        "audit request message",
        "verify run",
        "fingerprint",
        "backup ingest",
        "lineage show",
        "lineage verify",
        "lineage export",
        "lineage emit",
    }
)
"""Commands that run through the server in client mode (docs/server.md keeps the list)."""
CLIENT_COMMANDS: Final = frozenset({"login", "logout", "whoami"})
"""Commands that manage the client's own session (they talk to a server by nature)."""
STATELESS_COMMANDS: Final = frozenset(
    {
        "policy validate",
        "policy controls",
        "evidence verify",
        "progress verify",
        "export verify",
        "diff",
    }
)
"""Commands that read and change no home (a file given, or the controls catalog): they run
on this host in client mode too (``diff`` compares two index files of this host)."""
HOST_ONLY_COMMANDS: Final = {
    "init": "it creates a home",
    "serve": "it serves the home",
    "demo": "it makes a throwaway home of its own",
    "ledger recover": "it repairs the home's own files",
    "user break-glass": "the host's way back in, as its OS user",
}
"""Commands that only make sense on the host that owns the home, and why: refused in client
mode for good."""
_TIMEOUT: Final = 3600.0  # a backup or a verification through the API takes its time
_MAX_SESSION_FILE: Final = 64 * 1024
_PROGRESS_FROM: Final = 8 * 1024 * 1024  # files at least this large get a progress bar
_T = TypeVar("_T")
Param = str | list[str] | None
"""A query parameter's value: one, several (repeated), or none (left out)."""


class RemoteError(Error):
    """An error the server answered with: its message, hint and exit code (and the HTTP
    status)."""

    def __init__(self, message: str, *, hint: str | None, exit_code: int, status: int) -> None:
        super().__init__(message, hint=hint or "")
        self.status = status
        try:
            self.exit_code = ExitCode(exit_code)
        except ValueError:
            self.exit_code = ExitCode.INTERNAL


# -- the server's URL ------------------------------------------------------------------------


def server_url(text: str) -> str:
    """``text`` as a server's base URL (``https://host[:port][/path]``, no trailing slash);
    raise :class:`InputError` for anything else, and for plain ``http`` to a host other than
    a loopback address (passwords and session secrets would cross the network in clear)."""
    parts = urllib.parse.urlsplit(text.strip())
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise InputError(f"{text[:100]!r} is not a server URL", hint="e.g. https://host:8443")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise InputError(
            "a server URL holds no credentials, query or fragment",
            hint="e.g. https://host:8443; log in with `affidavit login URL`",
        )
    if parts.scheme == "http" and not _loopback(host):
        raise InputError(
            f"refusing plain http to {host}: credentials would cross the network in clear",
            hint="use https:// (the server takes --tls-cert/--tls-key)",
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the saved session -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedSession:
    """What ``affidavit login`` keeps."""

    server: str
    account: str
    session_id: str
    expires_at: str
    secret: str = field(repr=False)

    def to_json(self) -> dict[str, str]:
        """The file's content."""
        return {
            "server": self.server,
            "account": self.account,
            "session_id": self.session_id,
            "expires_at": self.expires_at,
            "secret": self.secret,
        }


def session_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/affidavit/session.json`` (``~/.config`` when unset or relative, as
    the XDG base directory specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "affidavit" / SESSION_FILENAME


def _refuse_link(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise InputError(
            f"{path} is a symbolic link: affidavit never writes a session through one",
            hint="remove the link",
        )


def save_session(session: SavedSession, path: Path | None = None) -> Path:
    """Write ``session`` (mode 0600; its folder 0700), replacing the file whole; refuse a
    symbolic link in place of the file or its folder."""
    target = path or session_path()
    folder = target.parent
    _refuse_link(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_link(folder)
    _refuse_link(target)
    data = (json.dumps(session.to_json(), indent=2) + "\n").encode()
    temp = folder / f".{target.name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temp, flags, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)  # replaces a file (never follows a link at the target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OperationError(f"cannot write {target}: {exc.strerror}") from exc
    return target


def load_session(path: Path | None = None) -> SavedSession | None:
    """The saved session, or None when there is none. Refuses a link, a file that others
    may read, and one that does not parse."""
    source = path or session_path()
    _refuse_link(source)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{source} is not a regular file", hint="remove it and log in again")
        if info.st_mode & 0o077:
            raise InputError(
                f"{source} may be read by others (mode {stat.S_IMODE(info.st_mode):o})",
                hint=f"chmod 600 {source}, or log in again",
            )
        raw = os.read(fd, _MAX_SESSION_FILE + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return SavedSession(
            server=str(data["server"]),
            account=str(data["account"]),
            session_id=str(data["session_id"]),
            expires_at=str(data["expires_at"]),
            secret=str(data["secret"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{source} is not a saved session", hint="remove it and log in again"
        ) from exc


def forget_session(path: Path | None = None) -> bool:
    """Remove the saved session; whether there was one."""
    target = path or session_path()
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True


# -- talking to the server -------------------------------------------------------------------


class Client:
    """A JSON client of one server's API (``/api/v1``), with or without a session."""

    def __init__(self, server: str, *, secret: str | None = None) -> None:
        self.server = server_url(server)
        self._secret = secret

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Param] | None = None,
    ) -> Any:
        """Call ``method path?params`` (a list value: the parameter repeated) and return the
        JSON answer; raise :class:`RemoteError` with
        the server's message, hint and exit code, or :class:`OperationError` (exit 3) when
        the server cannot be reached or answers with something else than JSON."""
        query = urllib.parse.urlencode(
            {k: v for k, v in (params or {}).items() if v is not None}, doseq=True
        )
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path + (f"?{query}" if query else ""), data=data) as response:
            try:
                raw = response.read()
            except OSError as exc:
                raise self._unreachable(exc) from None
        return _json(raw, self.server)

    def _open(self, method: str, path: str, *, data: bytes | None = None) -> Any:
        """The server's answer to ``method path`` (with a JSON body ``data``), open for
        reading; an HTTP error raises :meth:`_refused`'s error, no answer an
        :class:`OperationError`."""
        import urllib.request  # (with ssl and http.client: only when a command talks to one)

        headers = {"Accept": "application/json", "User-Agent": f"affidavit-cli/{__version__}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._secret is not None:
            headers["Authorization"] = f"Bearer {self._secret}"
        url = f"{self.server}{API_PREFIX}{path}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) only (server_url)
        try:
            return _opener().open(request, timeout=_TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None

    def _refused(self, exc: urllib.error.HTTPError) -> Error:
        """The error of an HTTP error answer: a redirect (not followed), or the server's
        message, hint and exit code."""
        location = str(exc.headers.get("Location", ""))
        return self._error_of(exc.code, location, exc.read() if exc.code >= 400 else b"")

    def _error_of(self, status: int, location: str, raw: bytes) -> Error:
        if 300 <= status < 400:
            return OperationError(
                f"the server {self.server} answered HTTP {status}, a redirect to "
                f"{location[:200]!r}: not followed (the session secret would go with it)",
                hint="log in with the URL the server itself answers on",
            )
        answer = _json(raw, self.server)
        if not isinstance(answer, dict) or "error" not in answer:
            return OperationError(
                f"the server {self.server} answered HTTP {status} without an error"
            )
        return RemoteError(
            str(answer["error"]),
            hint=answer.get("hint"),
            exit_code=int(answer.get("exit_code", ExitCode.INTERNAL)),
            status=status,
        )

    def upload(self, path: Path, *, reporter: Reporter | None = None) -> str:
        """Stream the regular file at ``path`` to ``POST /uploads`` (the standard library's
        ``http.client``, a piece at a time: never the whole file in memory) with its length
        and SHA-256 (read first), and return the upload's id for the command's JSON body.
        ``reporter``: a progress bar for a large file. Errors as :meth:`request`; a file
        that changes meanwhile is refused by the server (its SHA-256 no longer matches)."""
        from affidavit.services.uploads import open_to_upload, sha256_of

        with open_to_upload(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            bar = reporter if reporter is not None and size >= _PROGRESS_FROM else None
            if bar is not None:
                bar.task(f"reading {path.name}", size)
            digest = sha256_of(fh, size, on_chunk=bar.advance if bar is not None else None)
            fh.seek(0)
            if bar is not None:
                bar.task(f"uploading {path.name}", size)
            status, location, raw = self._post_file(fh, size, digest, bar)
        if bar is not None:
            bar.finish()
        if status >= 300:
            raise self._error_of(status, location, raw)
        answer = _json(raw, self.server)
        if not isinstance(answer, dict) or not isinstance(answer.get("upload"), str):
            raise OperationError(f"the server {self.server} did not answer with an upload")
        if answer.get("sha256") != digest or answer.get("size") != size:
            raise OperationError(
                f"the server {self.server} kept another file than the one sent",
                hint="upload it again; if it happens again, check what lies between you and "
                "the server",
            )
        return str(answer["upload"])

    def _post_file(
        self, fh: Any, size: int, digest: str, bar: Reporter | None
    ) -> tuple[int, str, bytes]:
        """``POST /uploads`` with the next ``size`` bytes of ``fh``: the answer's status,
        ``Location`` and body. A refusal the server sends before the whole body (its
        connection closed under the sending) is read and returned as any answer."""
        import http.client
        import ssl

        parts = urllib.parse.urlsplit(self.server)
        connection = (
            http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=_TIMEOUT,
                                        context=ssl.create_default_context())
            if parts.scheme == "https"
            else http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=_TIMEOUT)
        )  # fmt: skip
        headers = {
            "Accept": "application/json",
            "User-Agent": f"affidavit-cli/{__version__}",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Content-SHA256": digest,
        }
        if self._secret is not None:
            headers["Authorization"] = f"Bearer {self._secret}"
        try:
            connection.putrequest("POST", f"{parts.path}{API_PREFIX}/uploads")
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            left = size
            with contextlib.suppress(OSError):  # refused early: the answer says why
                while left > 0:
                    chunk = fh.read(min(left, 1 << 20))
                    if not chunk:
                        raise InputError("the file shrank while it was uploaded",
                                         hint="upload a file at rest")  # fmt: skip
                    connection.send(chunk)
                    left -= len(chunk)
                    if bar is not None:
                        bar.advance(len(chunk))
            response = connection.getresponse()
            return response.status, response.getheader("Location") or "", response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        finally:
            connection.close()

    def _unreachable(self, exc: BaseException) -> Error:
        reason = getattr(exc, "reason", exc)
        return OperationError(
            f"cannot reach the server {self.server}: {reason}",
            hint="check the URL and that `affidavit serve` runs there",
        )

    def download(self, path: str, target: Path) -> None:
        """``GET path`` (a file, not JSON) into ``target``, created new (mode 0600; never
        over an existing file or through a link). Errors as :meth:`request`; a file cut short
        is removed."""
        response = self._open("GET", path)
        with response:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(target, flags, 0o600)
            except FileExistsError:
                raise InputError(f"{target} already exists", hint="choose another --out") from None
            except OSError as exc:
                raise OperationError(f"cannot write {target}: {exc.strerror}") from None
            try:
                with os.fdopen(fd, "wb") as sink:
                    while chunk := response.read(1 << 20):
                        sink.write(chunk)
            except BaseException:
                target.unlink(missing_ok=True)
                raise

    def fetch(self, path: str, *, params: Mapping[str, Param] | None = None) -> bytes:
        """``GET path?params``: the answer's bytes as they are (a feed, not JSON); errors
        as :meth:`request`."""
        query = urllib.parse.urlencode(
            {k: v for k, v in (params or {}).items() if v is not None}, doseq=True
        )
        with self._open("GET", path + (f"?{query}" if query else "")) as response:
            try:
                return bytes(response.read())
            except OSError as exc:
                raise self._unreachable(exc) from None

    def get(self, path: str, **params: Param) -> Any:
        """``GET path?params``."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """``POST path`` with a JSON body; a 202 answer of a gated operation that waits for
        approval raises :class:`ApprovalPending` (printed as in local mode)."""
        return _done(self.request("POST", path, body=body if body is not None else {}))

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """``DELETE path`` with a JSON body (as :meth:`post` for a pending approval)."""
        return _done(self.request("DELETE", path, body=body if body is not None else {}))


def _done(answer: Any) -> Any:
    """``answer``, unless it says the operation waits for approval (then raise
    :class:`ApprovalPending` with the server's request)."""
    if isinstance(answer, dict) and answer.get("state") == "pending":
        request = answer.get("request")
        raise ApprovalPending(
            str(answer.get("message", "the operation waits for approval")),
            hint=str(answer.get("hint", "")),
            request=request if isinstance(request, dict) else {},
        )
    return answer


def _opener() -> Any:
    """A urllib opener that follows no redirect: urllib's would send the ``Authorization``
    header along to wherever one points (another host, or plain http)."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(NoRedirect)


def _json(raw: bytes, server: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise OperationError(f"the server {server} did not answer with JSON") from None


def configured_server(ctx: typer.Context) -> str | None:
    """The server of this invocation (``--server`` or ``AFFIDAVIT_SERVER``), if any."""
    value = ctx.find_root().meta.get(SERVER_META)
    return str(value) if value else None


def session_client(server: str | None = None) -> tuple[Client, SavedSession]:
    """A client with the saved session, for ``server`` (default: the session's own);
    refuses to send the session to any other server than the one that issued it."""
    saved = load_session()
    if saved is None:
        raise AuthenticationFailed(
            "not logged in to a server", hint="log in: `affidavit login URL`"
        )
    if server is not None and server_url(server) != saved.server:
        raise AuthenticationFailed(
            f"the saved session is for {saved.server}, not {server_url(server)}",
            hint=f"log in to that server: `affidavit login {server_url(server)}`",
        )
    return Client(saved.server, secret=saved.secret), saved


def remote(ctx: typer.Context) -> Client | None:
    """The client of this invocation in client mode, else None (local mode). Refuses
    ``--as`` in client mode: through the server one acts as the account logged in."""
    server = configured_server(ctx)
    if server is None:
        return None
    if ctx.params.get("as_name"):
        raise InputError(
            "--as logs in on this host (local mode); through the server you act as the "
            "account you logged in as",
            hint="drop --as, or `affidavit login URL --name NAME` first",
        )
    client, _ = session_client(server)
    return client


def remote_session(ctx: typer.Context) -> tuple[Client, str] | None:
    """As :func:`remote`, with the name of the account logged in (for the commands that act
    on one's own credentials or, as an administrator, on someone else's)."""
    server = configured_server(ctx)
    if server is None:
        return None
    client = remote(ctx)
    assert client is not None
    _, saved = session_client(server)
    return client, saved.account


StepUpCodeOpt = Annotated[
    str | None,
    typer.Option(
        "--code",
        help="Client mode: a current TOTP code for the MFA step-up that approvals and "
        "critical operations need (prompted for when the server asks).",
    ),
]
"""The ``--code`` option of a command whose route needs a fresh MFA check."""


def remote_post(
    ctx: typer.Context,
    path: str,
    body: Mapping[str, Any],
    code: str | None = None,
    *,
    method: str = "POST",
) -> Any | None:
    """``POST path`` (or ``method``) in client mode, after a step-up when ``code`` is given;
    else None (the command runs locally). A gated operation waiting for approval raises
    :class:`ApprovalPending`, as in local mode."""
    client = remote(ctx)
    if client is None:
        return None
    if code:
        client.post("/auth/step-up", {"code": code})
    return _done(client.request(method, path, body=dict(body)))


def new_target(out: Path) -> Path:
    """``out`` as the absolute path of a file to be downloaded: refused (before anything is
    asked of the server) when it exists or its folder does not."""
    target = out.expanduser().absolute()
    if os.path.lexists(target) or not target.parent.is_dir():
        raise InputError(
            f"{target} already exists" if os.path.lexists(target)
            else f"the folder {target.parent} does not exist",
            hint="choose another --out; nothing changed",
        )  # fmt: skip
    return target


def remote_export(ctx: typer.Context, path: str, out: Path) -> dict[str, Any] | None:
    """In client mode: ``POST path`` has the server write and record an export, whose file
    (``GET path/ID``) is downloaded into ``out`` (created new, mode 0600) and checked against
    the SHA-256 recorded (a mismatch removes it: exit 1); the export's summary with ``out``
    as its path, as given (as in local mode). None in local mode."""
    from affidavit.services.server_files import check_downloaded

    session = remote(ctx)
    if session is None:
        return None
    target = new_target(out)
    written = dict(session.post(path))
    session.download(f"{path}{route(str(written.pop('export')))}", target)
    check_downloaded(target, str(written["sha256"]))
    return {**written, "path": str(out)}


def local_only(command: str, **options: object) -> None:
    """In client mode, refuse ``options`` that were given (``--file``, ``--public-key``...):
    they name files on this host, which the server cannot read."""
    given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
    if given:
        raise InputError(
            f"`{command}` takes {', '.join(given)} only locally: the server cannot read this "
            "host's files",
            hint=f"unset {SERVER_ENV} (and drop --server) to run it on this host",
        )


def route(*parts: str) -> str:
    """An API path of ``parts``, each one a single percent-encoded segment (a name or id
    from the command line can hold no ``/``, ``?`` or ``..`` that changes the route)."""
    return "".join("/" + urllib.parse.quote(part, safe="") for part in parts)


def view(
    ctx: typer.Context,
    path: str,
    *,
    local: Callable[[App], _T],
    params: Mapping[str, Param] | None = None,
) -> Any:
    """The JSON view of a command: ``GET path`` from the server in client mode, else
    ``local(app)`` on this host's home. Both are the same ``affidavit.services.views``
    shapes (the server's routes build them from the same services)."""
    client = remote(ctx)
    if client is not None:
        return client.get(path, **(params or {}))
    with app_for(ctx) as application:
        return local(application)


GROUP_DEFAULTS: Final = {
    "calendar": ("calendar show", frozenset({"show", "ics", "add", "remove"})),
    "verify": ("verify run", frozenset({"run", "list"})),
}
"""Groups that run a command of theirs when given none (``affidavit calendar --from D``
is ``calendar show --from D``), and their commands' names."""


def _as_default(command: str) -> str:
    """``command`` as the command it runs: a group's default when what follows the group's
    name is none of its commands (nothing, or an option's value)."""
    group, _, rest = command.partition(" ")
    default = GROUP_DEFAULTS.get(group)
    if default is not None and rest not in default[1]:
        return default[0]
    return command


def refuse_local(command: str | None, server: str | None) -> None:
    """In client mode, refuse a command that cannot run through the server yet (it would
    act on a local home as the unverified OS user instead)."""
    if server is None or command is None:
        return
    command = _as_default(command)
    if command in REMOTE_COMMANDS | CLIENT_COMMANDS | STATELESS_COMMANDS:
        return
    if command in HOST_ONLY_COMMANDS:
        raise InputError(
            f"`{command}` runs on the server's host only ({HOST_ONLY_COMMANDS[command]}), "
            f"never through a server (client mode: {SERVER_ENV} or --server is set)",
            hint=f"run it on the server's host with {SERVER_ENV} unset",
        )
    raise InputError(
        f"`{command}` does not run through a server yet (client mode: {SERVER_ENV} or "
        "--server is set)",
        hint=f"docs/server.md lists the remote-capable commands; unset {SERVER_ENV} to run "
        "it locally on the server's host",
    )
