"""The sandbox's central HTTP server: what nodes fetch distfiles (and binary packages) from.

On a real fleet the central repository host serves its distfiles over HTTP(S)
and Portage on every node fetches them with ``FETCHCOMMAND`` (curl), checking
each file against the Manifest.  The sandbox must go through the very same
path, so it runs a real HTTP server process instead of copying files into a
node's DISTDIR behind Portage's back.

Why a separate, detached process (``python -m releaser.sandbox.distserver``) and not a
thread: the server has to outlive the ``releaser`` command that started it
(``sandbox up`` now, ``promote`` later), and ``emerge`` runs in other
processes that must reach it.  Its lifecycle is a pidfile:

* the child writes ``"<pid> <port>\\n"`` to the pidfile atomically, and only
  once its socket listens, so a pidfile that exists names a server that can
  be connected to (port 0 means "let the kernel pick", and the pidfile is how
  the parent learns the real port);
* ``stop_server`` kills only a pid whose ``/proc/PID/cmdline`` is still a
  ``releaser.sandbox.distserver``: a pidfile left over from a crash may name a pid the
  kernel has since given to an unrelated process, which must survive.

The handler is the standard library's ``SimpleHTTPRequestHandler`` (GET and
HEAD only: read-only), plus single byte-range requests, because Portage's
``RESUMECOMMAND`` (``curl --continue-at -``) resumes an interrupted download
with one, and curl refuses to resume from a server that ignores ranges.
Hidden names (a path component starting with ``.``) are neither listed nor
served: they are the central repository's temporaries (``.NAME.partial-*``,
an upload not yet checked), never a published file.

With ``--git-root`` (the LXC sandbox, ``releaser.sandbox.lxc_world``) it also
serves the central repository's bare overlay repositories under ``/git/`` by
git's smart HTTP protocol (``GitAndDistfilesHandler``: ``git http-backend``,
fetch only), what a central host's web server does for nodes that sync over
HTTP(S).

The small process helpers (``pid_alive``, ``process_cmdline``,
``terminate_pid``) are shared with ``releaser.sandbox.rc``.
"""

from __future__ import annotations

import argparse
import html
import io
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote, unquote

from releaser.errors import DistServerError, last_line
from releaser.files import write_atomic
from releaser.processes import pid_alive, process_cmdline

#: The module name every server process carries on its command line; stop
#: and liveness checks require it before trusting a pid.
MODULE = "releaser.sandbox.distserver"
#: How long ``start_server`` waits for the child to listen.
START_TIMEOUT = 10.0
#: How long ``stop_server`` waits after SIGTERM before SIGKILL.
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerInfo:
    """A running distfiles server: ``url`` is its base, e.g. ``http://127.0.0.1:40123``."""

    pid: int
    host: str
    port: int
    url: str


# --------------------------------------------------------------------------
# Process helpers (also used by releaser.sandbox.rc)
# --------------------------------------------------------------------------


#: Servers this process started, kept so their exit status is collected (no
#: zombie in a long-lived parent such as a test run) and so the Popen objects
#: do not warn about still-running children when garbage-collected.
_children: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it leaves no zombie."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _children[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate_pid(pid: int, is_ours: Callable[[int], bool], *, timeout: float = STOP_TIMEOUT,
                  kill_timeout: float = 5.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout``, then SIGKILL; only while ``is_ours(pid)``.

    ``is_ours`` is checked before each signal, so a pid that exits and is
    reused in between is never signalled.  Returns True if the process is gone
    (or was not ours to begin with: nothing of ours runs under that pid).
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        if not pid_alive(pid) or not is_ours(pid):
            _reap(pid)
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if _wait_gone(pid, wait):
            return True
    return not pid_alive(pid)


# --------------------------------------------------------------------------
# Pidfile
# --------------------------------------------------------------------------


def read_pidfile(pidfile: Path) -> tuple[int, int] | None:
    """``(pid, port)`` from a pidfile, or None if it is missing or malformed."""
    try:
        fields = Path(pidfile).read_text().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _write_pidfile(pidfile: Path, pid: int, port: int) -> None:
    write_atomic(pidfile, f"{pid} {port}\n")


def _is_server(pid: int) -> bool:
    return MODULE in process_cmdline(pid)


def server_alive(pidfile: Path) -> bool:
    """True if the pidfile names a live process that is a releaser distfiles server."""
    recorded = read_pidfile(pidfile)
    return recorded is not None and pid_alive(recorded[0]) and _is_server(recorded[0])


# --------------------------------------------------------------------------
# Parent side: start and stop
# --------------------------------------------------------------------------


def _log_tail(logfile: Path) -> str:
    try:
        return last_line(logfile.read_text(errors="replace"))
    except OSError:
        return "no log"


def start_server(directory: Path, host: str = "127.0.0.1", port: int = 0, *,
                 pidfile: Path, logfile: Path, timeout: float = START_TIMEOUT,
                 git_root: Path | None = None) -> ServerInfo:
    """Start a detached server for ``directory`` and return once it listens.

    The server runs in its own session (a Ctrl-C in the starting terminal does
    not reach it) with its output appended to ``logfile``.  Raises
    DistServerError if a server already runs under ``pidfile``, or if the
    child exits or does not listen within ``timeout`` seconds (the message
    carries the log's last line, e.g. "Address already in use").
    ``git_root``: also serve the bare repositories under it at ``GIT_PREFIX``.
    """
    directory = Path(directory).absolute()
    pidfile = Path(pidfile).absolute()
    logfile = Path(logfile).absolute()
    if not directory.is_dir():
        raise DistServerError(f"distfiles directory {directory} does not exist")
    recorded = read_pidfile(pidfile)
    if recorded is not None and server_alive(pidfile):
        raise DistServerError(f"a distfiles server already runs (pid {recorded[0]}, "
                              f"port {recorded[1]}, pidfile {pidfile}); stop it first")
    pidfile.unlink(missing_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)

    argv = [sys.executable, "-m", MODULE, "--directory", str(directory), "--bind", host,
            "--port", str(int(port)), "--pidfile", str(pidfile)]
    if git_root is not None:  # the overlays by git's smart HTTP at GIT_PREFIX
        argv += ["--git-root", str(Path(git_root).absolute())]
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, cwd="/")

    deadline = time.monotonic() + timeout
    while True:
        recorded = read_pidfile(pidfile)
        if recorded is not None and recorded[0] == proc.pid:
            _children[proc.pid] = proc
            return ServerInfo(proc.pid, host, recorded[1], f"http://{_url_host(host)}:{recorded[1]}")
        code = proc.poll()
        if code is not None:
            raise DistServerError(f"distfiles server exited with status {code} before listening "
                                  f"on {host}:{port}: {_log_tail(logfile)}")
        if time.monotonic() >= deadline:
            terminate_pid(proc.pid, _is_server)
            proc.wait()
            raise DistServerError(f"distfiles server did not listen on {host}:{port} within "
                                  f"{timeout:g} s: {_log_tail(logfile)}")
        time.sleep(0.05)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def stop_server(pidfile: Path, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server recorded in ``pidfile``; True if one was running and is gone.

    Idempotent: a missing pidfile, or one naming a dead pid or a pid that now
    belongs to another program, stops nothing (that other program is left
    alone) and the stale pidfile is removed.
    """
    pidfile = Path(pidfile)
    recorded = read_pidfile(pidfile)
    if recorded is None:
        pidfile.unlink(missing_ok=True)
        return False
    pid = recorded[0]
    running = pid_alive(pid) and _is_server(pid)
    if running and not terminate_pid(pid, _is_server, timeout=timeout):
        raise DistServerError(f"distfiles server pid {pid} survived SIGKILL")
    # The server removes its own pidfile on SIGTERM; this covers SIGKILL and stale files.
    if read_pidfile(pidfile) == recorded:
        pidfile.unlink(missing_ok=True)
    return running


# --------------------------------------------------------------------------
# Child side: the server process
# --------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class DistfilesHandler(SimpleHTTPRequestHandler):
    """Read-only static files with one-range support and one log line per request."""

    server_version = "releaser-distserver"

    def version_string(self) -> str:
        return self.server_version

    def send_head(self):  # noqa: D401 - stdlib hook
        self._range_left = None
        if _is_hidden(self.path):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        match = _RANGE.match(self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start >= size or end < start:
            f.close()
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f.seek(start)
        self._range_left = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._range_left))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return f

    def list_directory(self, path):
        """A plain listing of the directory's visible names (never ``.partial`` temporaries)."""
        try:
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "No permission to list directory")
            return None
        items = "".join(
            f'<li><a href="{quote(n + suffix)}">{html.escape(n + suffix)}</a></li>\n'
            for n in names for suffix in ["/" if os.path.isdir(os.path.join(path, n)) else ""])
        body = f"<!DOCTYPE html>\n<html><body><ul>\n{items}</ul></body></html>\n".encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_range_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            chunk = source.read(min(64 * 1024, left))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)

    def end_headers(self) -> None:
        if getattr(self, "_range_left", None) is None and self.command in ("GET", "HEAD"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {self.address_string()} {format % args}\n")


#: Where the overlays are served by git's smart HTTP (``git http-backend``), read-only.
GIT_PREFIX = "/git/"


class GitAndDistfilesHandler(DistfilesHandler):
    """Distfiles as above, and under ``GIT_PREFIX`` the central repository's bare overlay
    repositories, fetched by git's smart HTTP protocol through ``git http-backend``.

    What a central host with a web server does for nodes that sync over HTTP(S):
    git's own CGI program answers, and only fetches (``git-upload-pack``):
    http-backend refuses pushes from an unauthenticated client.
    """

    git_root: str = ""

    def do_GET(self):  # noqa: N802 - stdlib hook
        if self.path.startswith(GIT_PREFIX):
            return self._git(b"")
        return super().do_GET()

    def do_POST(self):  # noqa: N802 - stdlib hook
        if not self.path.startswith(GIT_PREFIX):
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
            return
        return self._git(self._body())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _git(self, body: bytes) -> None:
        path, _, query = self.path[len(GIT_PREFIX) - 1:].partition("?")
        if any(part.startswith(".") for part in unquote(path).split("/")):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        env = {"PATH": os.environ.get("PATH", os.defpath), "GIT_PROJECT_ROOT": self.git_root,
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": unquote(path), "QUERY_STRING": query,
               "REQUEST_METHOD": self.command, "REMOTE_ADDR": self.client_address[0],
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body))}
        for header, var in (("Git-Protocol", "GIT_PROTOCOL"),
                            ("Content-Encoding", "HTTP_CONTENT_ENCODING")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        done = subprocess.run(["git", "http-backend"], input=body, capture_output=True,
                              env=env, timeout=300)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        headers = [line.split(b":", 1) for line in head.splitlines() if b":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == b"status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != b"status":
                self.send_header(key.decode(), value.strip().decode())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if done.returncode != 0:
            sys.stderr.write(f"git http-backend exited {done.returncode}: "
                             f"{last_line(done.stderr.decode(errors='replace'))}\n")


def _is_hidden(url_path: str) -> bool:
    """True if any component of the request's path starts with ``.``.

    The path is cut and decoded as ``translate_path`` does, so what is checked
    is what would be opened.
    """
    path = unquote(url_path.split("?", 1)[0].split("#", 1)[0], errors="surrogatepass")
    return any(part.startswith(".") for part in path.split("/"))


def _serve(directory: Path, host: str, port: int, pidfile: Path,
           git_root: Path | None = None) -> int:
    if git_root is None:
        handler = partial(DistfilesHandler, directory=str(directory))
    else:
        handler = partial(type("Handler", (GitAndDistfilesHandler,), {"git_root": str(git_root)}),
                          directory=str(directory))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        sys.stderr.write(f"releaser.sandbox.distserver: cannot listen on {host}:{port}: "
                         f"{exc.strerror or exc}\n")
        return 1
    server.daemon_threads = True
    real_port = server.server_address[1]

    def _terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    _write_pidfile(pidfile, os.getpid(), real_port)
    sys.stderr.write(f"releaser.sandbox.distserver: pid {os.getpid()} serving {directory} "
                     f"on http://{_url_host(host)}:{real_port}\n")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if read_pidfile(pidfile) == (os.getpid(), real_port):
            pidfile.unlink(missing_ok=True)
        sys.stderr.write(f"releaser.sandbox.distserver: pid {os.getpid()} stopped\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m releaser.sandbox.distserver``: the server process itself (see start_server)."""
    parser = argparse.ArgumentParser(prog="python -m releaser.sandbox.distserver",
                                     description="Serve a directory read-only over HTTP.")
    parser.add_argument("--directory", required=True, type=Path)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pidfile", required=True, type=Path)
    parser.add_argument("--git-root", type=Path, default=None,
                        help="also serve the bare repositories under this folder by git's "
                             "smart HTTP at /git/")
    args = parser.parse_args(argv)
    return _serve(args.directory.absolute(), args.bind, args.port, args.pidfile.absolute(),
                  args.git_root.absolute() if args.git_root else None)


__all__ = [
    "ServerInfo",
    "pid_alive",
    "process_cmdline",
    "read_pidfile",
    "server_alive",
    "start_server",
    "stop_server",
    "terminate_pid",
]

if __name__ == "__main__":
    sys.exit(main())
