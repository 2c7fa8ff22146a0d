"""A local Triton server for a repository of onnxruntime models (written by ``jettagger export --triton``,
or CMS's own, as cms-data ships them for SONIC), for development and tests on machines without a
facility's server: PyTriton (``pip install nvidia-pytriton``, which ships a ``tritonserver`` with the
Python backend only) serving each model's ONNX through onnxruntime.

What a repository's config.pbtxt says is honoured where it matters here: ``max_batch_size``, inputs and
outputs, ``dynamic_batching { preferred_batch_size }``, ``parameters``, and the ``checksum``
repository agent (each ``MD5:<file>`` is verified before the model is served; a mismatch refuses to
start). ``label_filename`` is passed on unread (the client checks the class count against the output's
dims); ``optimization`` and other platform options are onnxruntime's defaults here.

Standalone on purpose: PyTriton needs numpy < 2, so it lives in its own environment (``make triton``
creates ``.venv-triton``) and this file imports nothing of jettagger_coffea::

    .venv-triton/bin/python src/jettagger_coffea/triton_server.py --model-repository REPO --grpc-port 8001

A facility's own Triton (onnxruntime backend) serves the same repository unchanged.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import threading
from pathlib import Path

# run as a script, this folder would come first on sys.path and shadow packages by our module names
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _libpython_first() -> None:
    """PyTriton's backend stub links ``libpython3.X.so``; the system one may be older than the stdlib of
    this interpreter (then the stub fails in multiprocessing). Put this interpreter's own first."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if Path(libdir, sysconfig.get_config_var("LDLIBRARY") or "").exists():
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
        )


def _config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _keep_parameters(params: dict[str, dict[str, str]]) -> None:
    """PyTriton writes its own config.pbtxt for the Python backend; carry each repository model's
    ``parameters`` (the ONNX hash clients check) over into it."""
    from pytriton.models.model import Model

    original = Model._get_triton_model_config

    def with_parameters(self):
        cfg = original(self)
        cfg.backend_parameters.update(params.get(self.model_name, {}))
        return cfg

    Model._get_triton_model_config = with_parameters


def _verify_checksums(folder: Path, cfg) -> None:
    """The checksum agent's ``MD5:<relative path>`` entries, checked as Triton's agent would."""
    import hashlib

    for agent in cfg.model_repository_agents.agents:
        if agent.name != "checksum":
            continue
        for key, want in agent.parameters.items():
            algo, _, rel = key.partition(":")
            if algo.upper() != "MD5":
                raise SystemExit(f"{folder}: checksum agent: unsupported {algo}")
            got = hashlib.md5((folder / rel).read_bytes()).hexdigest()
            if got != want:
                raise SystemExit(f"{folder}: checksum agent: {rel} has MD5 {got}, config.pbtxt says {want}")


def _bind(triton, folder: Path, threads: int) -> str:
    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    cfg = _config(folder / "config.pbtxt")
    _verify_checksums(folder, cfg)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in cfg.output]  # every output the config lists (classes, regressions, ...)
    lock = threading.Lock()

    @batch
    def infer(**inputs):
        with lock:
            return dict(zip(out_names, sess.run(out_names, inputs)))

    def tensors(ts):
        return [Tensor(name=t.name, dtype=np.float32, shape=tuple(int(d) for d in t.dims)) for t in ts]

    triton.bind(
        model_name=cfg.name,
        infer_func=infer,
        inputs=tensors(cfg.input),
        outputs=tensors(cfg.output),
        config=ModelConfig(
            max_batch_size=cfg.max_batch_size,
            batcher=DynamicBatcher(
                preferred_batch_size=list(cfg.dynamic_batching.preferred_batch_size) or None
            ),
        ),
        strict=False,
    )
    return cfg.name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-repository", required=True, help="folder written by `jettagger export --triton`")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads per model")
    args = p.parse_args(argv)
    repo = Path(args.model_repository)
    folders = sorted(f for f in repo.iterdir() if (f / "config.pbtxt").is_file()) if repo.is_dir() else []
    if not folders:
        print(f"{repo}: no model folders with config.pbtxt", file=sys.stderr)
        return 2
    _libpython_first()
    from pytriton.triton import Triton, TritonConfig

    configs = [_config(f / "config.pbtxt") for f in folders]
    _keep_parameters({c.name: {k: v.string_value for k, v in c.parameters.items()} for c in configs})

    cfg = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port)
    with Triton(config=cfg) as triton:
        names = [_bind(triton, f, args.threads) for f in folders]
        print(f"serving {', '.join(names)} on grpc :{args.grpc_port}, http :{args.http_port}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
