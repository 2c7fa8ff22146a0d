"""A dask cluster outside the test process, the way a facility runs one: ``dask scheduler`` and
``dask worker`` as separate processes on 127.0.0.1. Each worker runs in its own mount namespace
(``unshare -m``) with a tmpfs over every folder in ``hide`` (the client's bundles and input files) and in
its own working directory, so nothing of the client's disk but the installed package reaches it."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: seconds the scheduler and the workers get to come up
START_TIMEOUT = 60


def can_isolate() -> str | None:
    """Why workers cannot be isolated here (None: they can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "unshare -m and tmpfs mounts need root"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
    if probe.returncode:
        return f"unshare -m fails here: {probe.stderr.strip()}"
    return None


class ExternalCluster:
    """``start()`` the scheduler and ``n_workers`` isolated workers; ``address``; ``client()``;
    ``kill_worker()``; ``close()``."""

    def __init__(self, root: Path, hide: list[Path], n_workers: int = 2) -> None:
        self.root = Path(root)
        self.hide = [Path(h) for h in hide]
        self.n_workers = n_workers
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", JETTAGGER_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop("JETTAGGER_MODEL", None)
        env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
        return env

    def start(self) -> ExternalCluster:
        sched_file = self.root / "scheduler.json"
        log = (self.root / "scheduler.log").open("w")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                 "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.root,
            )
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not sched_file.is_file():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                why = (self.root / "scheduler.log").read_text()
                raise RuntimeError(f"dask scheduler did not start: {why}")
            time.sleep(0.2)
        self.address = json.loads(sched_file.read_text())["address"]
        for i in range(self.n_workers):
            self._start_worker(i)
        with self.client() as c:
            c.wait_for_workers(self.n_workers, timeout=START_TIMEOUT)
        return self

    def _start_worker(self, i: int) -> None:
        work = self.root / f"worker{i}"
        work.mkdir(exist_ok=True)
        mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(h))}" for h in self.hide)
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1",
                  "--nworkers", "1", "--no-dashboard", "--name", f"external-{i}", "--memory-limit", "3GB",
                  "--local-directory", str(work / "dask")]  # fmt: skip
        steps = [*([mounts] if mounts else []), f"cd {shlex.quote(str(work))}", f"exec {shlex.join(worker)}"]
        script = " && ".join(steps)
        log = (work / "worker.log").open("w")
        self.procs.append(
            subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=work, start_new_session=True,
            )
        )  # fmt: skip

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=START_TIMEOUT)

    def kill_worker(self, client, address: str | None = None) -> str:
        """SIGKILL a worker process (``address``, default: any); its nanny starts a new one, which gets
        the model from the scheduler's plugins. Returns the address killed."""
        pids = client.run(os.getpid)
        address = address or min(pids)
        os.kill(pids[address], signal.SIGKILL)
        return address

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                if p.pid and p is not self.procs[0]:
                    os.killpg(p.pid, signal.SIGTERM)
                else:
                    p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL) if p is not self.procs[0] else p.kill()
                p.wait(timeout=10)
