"""Batch clusters from a cluster YAML (clusters.py): the example YAMLs' job scripts, the cluster objects
built without a submission, a run of real jobs through a stand-in ``sbatch`` that starts the job script on
this machine, bad YAMLs refused with one line, and ``jettagger cluster-script``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.cli import main
from jettagger_coffea.clusters import (
    MAX_FILE_BYTES,
    PLACEHOLDER_ADDRESS,
    ClusterSpec,
    build_cluster,
    cluster_client,
    job_script,
    load_cluster_spec,
)

pytest.importorskip("dask_jobqueue", reason="the `jobqueue` extra is not installed")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "clusters"
HTCONDOR, SLURM = EXAMPLES / "htcondor.yaml", EXAMPLES / "slurm.yaml"

#: stand-ins for the batch commands: each records its call; ``sbatch`` starts the job script in its own
#: session (process group = its pid, the "job id") and ``scancel`` ends that group, as SLURM would
FAKE_BATCH = {
    "sbatch": """script="$FAKE_BATCH_LOG/job-$$.sh"
cp "$1" "$script"  # the submitted file is a temporary one, gone once sbatch returns
if [ -n "$FAKE_BATCH_RUN" ]; then
  setsid bash "$script" > "$script.log" 2>&1 < /dev/null &
  id=$!
else
  id=$$
fi
echo "$id" >> "$FAKE_BATCH_LOG/submitted"
echo "Submitted batch job $id"
""",
    "scancel": """echo "$1" >> "$FAKE_BATCH_LOG/cancelled"
kill -TERM -- "-$1" 2>/dev/null
exit 0
""",
    "condor_submit": 'echo "$@" >> "$FAKE_BATCH_LOG/submitted"; echo "1 job(s) submitted to cluster 7."\n',
    "condor_rm": 'echo "$@" >> "$FAKE_BATCH_LOG/cancelled"\n',
}


@pytest.fixture
def batch(tmp_path, monkeypatch) -> Path:
    """A folder of records of every batch command called; the stand-ins first on PATH."""
    bin_dir, log = tmp_path / "bin", tmp_path / "batch-log"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in FAKE_BATCH.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BATCH_LOG", str(log))
    return log


def _records(log: Path, name: str) -> list[str]:
    path = log / name
    return path.read_text().split() if path.exists() else []


# -- the example YAMLs and their job scripts ----------------------------------------------------------------
def test_htcondor_example_job_script():
    spec = load_cluster_spec(HTCONDOR)
    assert (spec.kind, spec.jobs, spec.cores, spec.memory, spec.disk) == ("htcondor", 10, 2, "4GB", "2GB")
    script = job_script(spec)
    lines = script.splitlines()
    assert "MY.DaskWorkerCores = 2" in lines
    assert "RequestCpus = MY.DaskWorkerCores" in lines
    assert "MY.DaskWorkerMemory = 4000000000" in lines
    assert "MY.DaskWorkerDisk = 2000000000" in lines
    assert '+JobFlavour = "longlunch"' in lines  # a ClassAd string, its quotes kept
    (arguments,) = [line for line in lines if line.startswith("Arguments = ")]
    # the prologue runs first, in the same shell as the worker; 2 workers of one thread, 4GB / 2 each
    assert arguments.startswith(
        "Arguments = \"-c 'source /afs/cern.ch/user/u/username/jettagger-venv/bin/activate; "
        f"python3 -m distributed.cli.dask_worker {PLACEHOLDER_ADDRESS} "
    )
    assert " --nthreads 1 --memory-limit 1.86GiB --nworkers 2 " in arguments
    assert "Executable = /bin/sh" in lines


def test_slurm_example_job_script():
    spec = load_cluster_spec(SLURM)
    assert (spec.kind, spec.jobs, spec.cores, spec.walltime) == ("slurm", 4, 8, "02:00:00")
    lines = job_script(spec).splitlines()
    for directive in (
        "#SBATCH -p standard",
        "#SBATCH -A cms",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=15G",  # 16GB = 14.9 GiB, rounded up as SLURM counts
        "#SBATCH -t 02:00:00",
        "#SBATCH --constraint=cpu",
    ):
        assert directive in lines
    prologue = lines.index("source $HOME/venvs/jettagger/bin/activate")
    worker = lines[prologue + 1]
    assert worker.startswith(f"python3 -m distributed.cli.dask_worker {PLACEHOLDER_ADDRESS} ")
    assert " --nthreads 1 --memory-limit 1.86GiB --nworkers 8 " in worker


@pytest.mark.parametrize("path", [HTCONDOR, SLURM], ids=["htcondor", "slurm"])
def test_cluster_object_submits_nothing(path, batch):
    """Built from the example (its scheduler on 127.0.0.1), the cluster's own job script is the printed
    one with the address filled in; nothing is submitted, and closing it cancels nothing."""
    spec = dataclasses.replace(load_cluster_spec(path), interface="lo")
    cluster = build_cluster(spec)
    try:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        assert cluster.job_script() == job_script(spec).replace(PLACEHOLDER_ADDRESS, address)
        assert "--interface lo" in cluster.job_script()
        assert cluster.workers == {}
    finally:
        cluster.close()
    assert cluster.status.name == "closed"
    assert _records(batch, "submitted") == []
    assert _records(batch, "cancelled") == []


def test_cluster_client_runs_the_jobs(batch, monkeypatch):
    """``jobs: 2`` submits two jobs; each job script (prologue, then the worker) runs, its one-thread worker
    joins the scheduler; leaving the client cancels both jobs and their workers end."""
    monkeypatch.setenv("FAKE_BATCH_RUN", "1")
    spec = ClusterSpec.from_dict(
        {
            "kind": "slurm",
            "jobs": 2,
            "cores": 1,
            "memory": "1GB",
            "interface": "lo",
            "python": sys.executable,
            "job_script_prologue": ["export JETTAGGER_CLUSTER_TEST=from-prologue"],
        }
    )
    try:
        with cluster_client(spec) as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info()["workers"]
            assert sorted(w["nthreads"] for w in workers.values()) == [1, 1]
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
            seen = client.run(lambda: os.environ.get("JETTAGGER_CLUSTER_TEST"))
            assert sorted(seen.values()) == ["from-prologue", "from-prologue"]
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        submitted = _records(batch, "submitted")
        assert len(submitted) == 2
        assert sorted(_records(batch, "cancelled")) == sorted(submitted)
        _wait_gone([int(pid) for pid in submitted])
    finally:  # whatever happened: end the process groups this test started
        for pid in _records(batch, "submitted"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


def _wait_gone(groups: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for group in groups:
        while True:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"job {group}'s processes still run after scancel"
            time.sleep(0.1)


# -- bad YAMLs: one line naming the file and the key ---------------------------------------------------------
SLURM_OK = "kind: slurm\njobs: 2\ncores: 2\nmemory: 4GB\n"
CONDOR_OK = "kind: htcondor\njobs: 2\ncores: 2\nmemory: 4GB\ndisk: 1GB\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SLURM_OK + "nodes: 3\n", "unknown key 'nodes' (allowed for slurm: kind, jobs,"),
        (CONDOR_OK + "walltime: '01:00:00'\n", "'walltime' is for kind slurm, not htcondor; on HTCondor"),
        (SLURM_OK + "disk: 1GB\n", "'disk' is for kind htcondor, not slurm"),
        ("kind: pbs\njobs: 1\n", "kind must be one of htcondor, slurm, got 'pbs'"),
        ("kind: slurm\njobs: 1\n", "missing cores, memory (required for kind slurm)"),
        ("kind: htcondor\njobs: 1\ncores: 1\nmemory: 1GB\n", "missing disk (required for kind htcondor)"),
        (SLURM_OK.replace("jobs: 2", "jobs: 0"), "jobs must be an integer in 1..2000, got 0"),
        (SLURM_OK.replace("jobs: 2", "jobs: 100000000"), "jobs must be an integer in 1..2000, got 100000000"),
        (SLURM_OK.replace("jobs: 2", "jobs: true"), "jobs must be an integer in 1..2000, got True"),
        (SLURM_OK.replace("jobs: 2", "jobs: 2.5"), "jobs must be an integer in 1..2000, got 2.5"),
        (SLURM_OK.replace("cores: 2", "cores: two"), "cores must be an integer in 1..256, got 'two'"),
        (SLURM_OK.replace("cores: 2", "cores: 100000"), "cores must be an integer in 1..256"),
        (SLURM_OK.replace("memory: 4GB", "memory: 4"), "memory must be a size with its unit, e.g. '4GB'"),
        (SLURM_OK.replace("memory: 4GB", "memory: lots"), "memory must be a size with its unit"),
        (SLURM_OK.replace("memory: 4GB", "memory: 900TB"), "above 0 and at most 4TiB, got '900TB'"),
        (SLURM_OK + "walltime: 2:00:00\n", "walltime must be a quoted SLURM time, e.g. '02:00:00'"),
        (SLURM_OK + "walltime: 'two hours'\n", "walltime must be a quoted SLURM time"),
        (SLURM_OK + "job_script_prologue: source venv/bin/activate\n", "job_script_prologue must be a list"),
        (SLURM_OK + 'job_script_prologue: ["a\\nb"]\n', "job_script_prologue[0] must be a line of one line"),
        (SLURM_OK + "job_script_prologue: [[1, 2]]\n", "job_script_prologue[0] must be a line"),
        (SLURM_OK + "job_extra_directives: {a: b}\n", "job_extra_directives must be a list"),
        (CONDOR_OK + "job_extra_directives: [+JobFlavour]\n", "job_extra_directives must be a map"),
        (CONDOR_OK + "job_extra_directives: {'a b': 1}\n", "job_extra_directives name must be a submit"),
        (SLURM_OK + "scheduler_port: 70000\n", "scheduler_port must be an integer in 0..65535"),
        (SLURM_OK + "python: ''\n", "python must be a text of one line"),
        ("- kind\n- slurm\n", "a cluster config is a mapping"),
        ("kind: [slurm\n", "invalid YAML"),
    ],
)
def test_bad_yaml_refused(tmp_path, text, expected):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(JetTaggerError) as err:
        load_cluster_spec(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(f"{path}:")
    assert "\n" not in message


def test_bounds_on_the_file_and_its_lists(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(SLURM_OK + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(JetTaggerError, match=r"bytes; a cluster config is at most 65536"):
        load_cluster_spec(big)
    many = tmp_path / "many.yaml"
    many.write_text(SLURM_OK + "job_extra_directives:\n" + "  - --x\n" * 65)
    with pytest.raises(JetTaggerError, match=r"job_extra_directives must be a list of at most 64 lines"):
        load_cluster_spec(many)
    with pytest.raises(JetTaggerError, match=r"cannot read cluster config .*absent.yaml"):
        load_cluster_spec(tmp_path / "absent.yaml")


def test_missing_jobqueue_names_the_extra(monkeypatch):
    """The YAML is checked without dask-jobqueue; the cluster needs it, and says which extra has it."""
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # an import of it fails as if not installed
    spec = load_cluster_spec(SLURM)
    with pytest.raises(
        JetTaggerError, match=r"the `jobqueue` extra .*pip install 'jettagger-coffea\[jobqueue\]'"
    ):
        job_script(spec)


# -- the command line --------------------------------------------------------------------------------------
def test_cli_cluster_script(capsys):
    assert main(["cluster-script", str(HTCONDOR)]) == 0
    out, err = capsys.readouterr()
    assert out == job_script(load_cluster_spec(HTCONDOR))
    assert err.strip() == (
        "# 10 job(s) x 2 one-thread workers = 20 dask workers; the scheduler address is filled in when "
        "the cluster starts"
    )


def test_cli_bad_cluster_file(tmp_path, capsys, batch):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SLURM_OK.replace("jobs: 2", "jobs: -1"))
    assert main(["cluster-script", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"jettagger cluster-script: error: {bad}: jobs must be an integer in 1..2000, got -1\n"
    # `run --cluster` checks it (and what goes with it) before any work: no job, no output folder
    output = tmp_path / "out"
    for extra, expected in [
        ([], f"{bad}: jobs must be an integer"),
        (["--executor", "iterative"], "--cluster runs --executor dask or dask-awkward, not iterative"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--cluster and --scheduler: give one"),
    ]:
        assert main(["run", "--cluster", str(bad), *extra, "-o", str(output)]) == 2
        _, err = capsys.readouterr()
        assert err.startswith("jettagger run: error: ")
        assert expected in err
        assert err.count("\n") == 1
    assert not output.exists()
    assert _records(batch, "submitted") == []


@pytest.mark.slow  # a worker process importing coffea: about 10 s of CPU on the 2-core machine
def test_cli_run_on_batch_jobs(tmp_path, batch, monkeypatch, capsys):
    """``jettagger run --cluster``: one job (one one-thread worker) started through the stand-in ``sbatch``;
    the same cutflow as in one process, the job cancelled at the end."""
    import inspect
    import json

    from jettagger_coffea.data import default_fileset
    from jettagger_coffea.execution import run_fileset

    if "client" not in inspect.signature(run_fileset).parameters:
        pytest.skip("execution.run_fileset takes no client= yet")
    monkeypatch.setenv("FAKE_BATCH_RUN", "1")
    config = tmp_path / "cluster.yaml"
    config.write_text(
        f"kind: slurm\njobs: 1\ncores: 1\nmemory: 2GB\ninterface: lo\npython: {sys.executable}\n"
    )
    fileset = {"tbqq": default_fileset()["tbqq"]}
    (tmp_path / "fileset.json").write_text(json.dumps(fileset))
    output = tmp_path / "out"
    argv = ["run", "--cluster", str(config), "--fileset", str(tmp_path / "fileset.json"), "--model", "pfn"]
    assert main([*argv, "-o", str(output)]) == 0
    assert " on dask: " in capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    clean = run_fileset("pfn", fileset, executor="iterative", chunksize=500, progress=False)
    assert metrics["cutflow"] == json.loads(json.dumps(clean["cutflow"]))
    submitted = _records(batch, "submitted")
    assert len(submitted) == 1
    assert _records(batch, "cancelled") == submitted
    _wait_gone([int(pid) for pid in submitted])


def test_scheduler_that_cannot_start_is_one_line(batch):
    spec = dataclasses.replace(load_cluster_spec(SLURM), interface="nosuch0")
    with pytest.raises(JetTaggerError) as err:
        build_cluster(spec)
    assert str(err.value).startswith(f"{SLURM}: cannot start the slurm cluster's scheduler: 'nosuch0' is not")
    assert "\n" not in str(err.value)
    assert _records(batch, "submitted") == []
