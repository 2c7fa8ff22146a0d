"""Debian's ``xrootd`` (package ``xrootd-server``) serving a temporary folder, read-only, to 127.0.0.1: the
real server the remote-file tests (and the distributed ones) read ``root://`` and ``http://`` URLs from.

    server = XRootDServer()          # a fresh folder under the system temp dir, two free ports
    server.start()                   # returns once the server answers (bounded)
    shutil.copy(src, server.folder / "a.root")
    server.url(server.folder / "a.root")       # "root://127.0.0.1:PORT//tmp/xrootd-.../a.root"
    server.stop(); server.start()    # the same ports again: a restart, for the fault tests
    server.close()                   # stopped, folder removed

xrootd refuses to run as root: as root it runs as ``nobody`` (``-R``), and the folder is made readable to
everyone (under /tmp, not under pytest's 0700 tmp_path). It listens on both ports of every interface
(xrootd 5.5 has no listen address) but serves 127.0.0.1 only (``xrd.allow``)."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

XROOTD = Path("/usr/bin/xrootd")
#: the unprivileged users xrootd may run as when the tests run as root (the first that exists; else
#: ``xrootd`` is created, as Debian's package would)
USERS = ("nobody", "xrootd")
#: seconds a start may take before it counts as failed (it takes ~0.2 s)
START_TIMEOUT = 20.0


def unavailable() -> str | None:
    """Why no server (or no client) can run here, or None."""
    if not XROOTD.exists():
        return f"{XROOTD} not installed (Debian's xrootd-server; .ci/run installs it)"
    for module, dist in (("XRootD", "xrootd"), ("fsspec_xrootd", "fsspec-xrootd")):
        if importlib.util.find_spec(module) is None:
            return f"the {dist} Python package is not installed (pip install -e '.[xrootd]')"
    return None


def _server_user() -> str:
    for user in USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return user
    subprocess.run(["useradd", "--system", "--no-create-home", USERS[-1]], check=True, capture_output=True)
    return USERS[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class XRootDServer:
    """One xrootd process: ``folder`` served read-only as ``root://127.0.0.1:port`` and (XrdHttp, with
    range requests) ``http://127.0.0.1:http_port``; ``stop()`` and ``start()`` reuse the ports."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="xrootd-")).resolve()
        self.folder.chmod(0o755)
        self._admin = Path(tempfile.mkdtemp(prefix="xrootd-admin-"))
        self.port, self.http_port = _free_port(), _free_port()
        self._proc: subprocess.Popen | None = None
        self._user = _server_user() if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self._admin, self._user)

    def url(self, path: str | Path) -> str:
        """The root:// URL of a file in ``folder`` (two slashes before an absolute path)."""
        return f"root://127.0.0.1:{self.port}/{self._served(path)}"

    def http_url(self, path: str | Path) -> str:
        return f"http://127.0.0.1:{self.http_port}/{self._served(path)}"

    def _served(self, path: str | Path) -> Path:
        p = Path(path).resolve()
        if self.folder not in p.parents:
            raise ValueError(f"{p} is not in the served folder {self.folder}")
        return p

    @property
    def log(self) -> Path:
        return self._admin / "xrootd.log"

    def start(self) -> None:
        """Start xrootd and wait until both ports accept connections (at most START_TIMEOUT s)."""
        if self._proc is not None:
            return
        cfg = self._admin / "xrootd.cfg"
        cfg.write_text(
            f"xrd.port {self.port}\n"
            "xrd.allow host 127.0.0.1\n"
            f"all.export {self.folder} r/o\n"
            f"all.adminpath {self._admin}\n"
            f"all.pidpath {self._admin}\n"
            f"xrd.protocol XrdHttp:{self.http_port} libXrdHttp.so\n"
        )
        cmd = [str(XROOTD), "-c", str(cfg), "-l", str(self.log)]
        if self._user:
            cmd += ["-R", self._user]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        atexit.register(self.stop)  # (its own session: not ended by the terminal's Ctrl-C)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [self.port, self.http_port]
        while waiting:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"xrootd did not start on port {waiting[0]}: {self._log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", waiting[0]), 0.2):
                waiting.pop(0)
                continue
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop xrootd (SIGTERM, SIGKILL after 5 s); its clients see the connection go."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self._admin, ignore_errors=True)

    def __enter__(self) -> XRootDServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text().strip().splitlines()[-5:])
        except OSError as err:
            return f"(no log: {err})"
