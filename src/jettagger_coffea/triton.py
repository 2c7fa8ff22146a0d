"""Triton inference server (the SONIC way analysis facilities serve taggers): the model repository written
by ``jettagger export --triton`` and a backend that sends the padded batches to a server. Features,
padding and batching stay on the client, exactly as with onnxruntime; only ``InferenceSession.run`` moves."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from ._state import ProcessLocal

#: jets per request: Triton refuses a batch above the model's max_batch_size, so larger ones are split
MAX_BATCH = 1024
#: model-config parameter holding the sha256 of model.onnx: the client checks the server runs the bundle's
#: network, not a stale copy of the same name
HASH_KEY = "jettagger_onnx_sha256"
#: the model file of a repository's version folder
MODEL_FILE = "model.onnx"
#: gRPC / HTTP status texts tritonclient reports for a server that is starting, overloaded or unreachable
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "503", "502", "504")
_DTYPES = {"tensor(float)": ("TYPE_FP32", "FP32"), "tensor(double)": ("TYPE_FP64", "FP64")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dims(shape: list[Any]) -> list[int]:
    """Triton dims of an ONNX tensor without its batch axis: symbolic axes (particles) become -1."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]


def model_config(bundle: Any, name: str, max_batch: int = MAX_BATCH) -> str:
    """config.pbtxt of a bundle's ONNX: dynamic batch axis (``max_batch_size``), dynamic particle axis
    (-1), dynamic batching of equal-shape requests, and the ONNX hash for the client's check."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])

    def tensor(t: Any) -> str:
        if t.type not in _DTYPES:
            raise JetTaggerError(f"{bundle.onnx_path}: tensor {t.name!r} has type {t.type}, not float")
        dims = ", ".join(str(d) for d in _dims(t.shape))
        return f'  {{ name: "{t.name}" data_type: {_DTYPES[t.type][0]} dims: [ {dims} ] }}'

    inputs = ",\n".join(tensor(t) for t in sess.get_inputs())
    outputs = ",\n".join(tensor(t) for t in sess.get_outputs())  # every output: classes, regressions, ...
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\ndynamic_batching {{ }}\n"
        f'parameters {{ key: "{HASH_KEY}" value: {{ string_value: "{sha256(bundle.onnx_path)}" }} }}\n'
    )


def write_repository(
    bundle: Any, repository: str | Path, name: str | None = None, max_batch: int = MAX_BATCH
) -> Path:
    """``<repository>/<name>/config.pbtxt`` and ``1/model.onnx`` (Triton's layout; other models in the
    repository are kept). Returns the model folder."""
    name = name or bundle.name
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.onnx_path, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(model_config(bundle, name, max_batch))
    return folder


def _transient(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}"
    return any(t in text for t in TRANSIENT) or isinstance(err, (ConnectionError, TimeoutError))


class TritonBackend(ProcessLocal):
    """Sends each padded batch to a Triton server (gRPC, or HTTP for ``http://`` URLs), split at the
    model's ``max_batch_size``; transient errors (server starting, overloaded, connection dropped) are
    retried with exponential back-off. The connection is made per process (never pickled)."""

    _process_local = ("_client",)

    def __init__(
        self,
        url: str,
        model: str,
        bundle: Any = None,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.model = model
        self.bundle = bundle
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._client: Any = None
        self._meta: dict[str, Any] | None = None

    @classmethod
    def from_bundle(
        cls, bundle: Any, server: str | None = None, served_model: str | None = None
    ) -> TritonBackend:
        """The bundle's network on ``server``; an unreachable server or a model that does not match the
        bundle fails here, before any work."""
        if not server:
            raise JetTaggerError("the triton backend needs a server URL (--server grpc://host:8001)")
        backend = cls(server, served_model or bundle.served_model or bundle.name, bundle)
        backend.metadata()
        return backend

    @property
    def _http(self) -> bool:
        return self.url.startswith("http://")

    @property
    def where(self) -> str:
        return f"Triton server {self.url}, model {self.model!r}"

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                if self._http:
                    import tritonclient.http as tc

                    self._client = tc.InferenceServerClient(
                        self.url.removeprefix("http://"),
                        connection_timeout=self.timeout,
                        network_timeout=self.timeout,
                    )
                else:
                    import tritonclient.grpc as tc

                    self._client = tc.InferenceServerClient(self.url.removeprefix("grpc://"))
            except ImportError as err:
                raise JetTaggerError(
                    "the triton backend needs tritonclient: pip install 'jettagger-coffea[triton]'"
                ) from err
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """``fn`` with retries on transient errors; anything else, or running out of retries, is one line
        naming the server and model."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kw)
            except Exception as err:  # noqa: BLE001 - tritonclient raises its own and grpc/socket errors
                if not _transient(err) or attempt == self.retries:
                    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise JetTaggerError(f"{self.where}: {what} failed: {msg}") from None
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError  # pragma: no cover

    def metadata(self) -> dict[str, Any]:
        """Inputs (name -> dims), output width, max batch size and the model file's hashes (ours, or the
        checksum agent's MD5 of CMS's repositories) of the served model; checked against the bundle the
        first time."""
        if self._meta is None:
            cfg = self._call("reading the model config", self.client.get_model_config, self.model)
            if not self._http:
                from google.protobuf.json_format import MessageToDict

                cfg = MessageToDict(cfg.config, preserving_proto_field_name=True)
            params = cfg.get("parameters") or {}
            outputs = cfg.get("output") or []
            agents = (cfg.get("model_repository_agents") or {}).get("agents") or []
            md5 = next(
                (
                    p.get(f"MD5:1/{MODEL_FILE}")
                    for a in agents
                    if a.get("name") == "checksum"
                    for p in [a.get("parameters") or {}]
                ),
                None,
            )
            meta = {
                "inputs": {i["name"]: [int(d) for d in i.get("dims", [])] for i in cfg.get("input", [])},
                #: output name -> dims, in the served model's order
                "outputs": {o.get("name", ""): [int(d) for d in o.get("dims", [])] for o in outputs},
                "max_batch_size": int(cfg.get("max_batch_size", 0)) or MAX_BATCH,
                "hash": (params.get(HASH_KEY) or {}).get("string_value"),
                "md5": md5,
            }
            if self.bundle is not None:
                self._check(meta)
            self._meta = meta
        return self._meta

    def _check(self, meta: dict[str, Any]) -> None:
        shapes = self.bundle.config.input_shapes
        unknown = sorted(set(meta["inputs"]) - set(shapes))
        if unknown:
            raise JetTaggerError(
                f"{self.where}: takes inputs {unknown} that bundle {self.bundle.path} does not make "
                f"(its groups: {sorted(shapes)})"
            )
        for k, dims in meta["inputs"].items():
            if dims[:1] != [shapes[k][1]]:
                raise JetTaggerError(
                    f"{self.where}: input {k!r} has dims {dims}, bundle {self.bundle.path} gives "
                    f"{shapes[k][1]} variables"
                )
        served = meta["outputs"]
        names = self.bundle.outputs.names
        if names is None:  # the model's first output holds every column of the card
            want = {name: len(self.bundle.outputs.columns) for name in list(served)[:1]}
        else:
            want = {t.name: len(t.columns) for t in self.bundle.outputs.tensors}
        for name, width in want.items():
            if name not in served:
                raise JetTaggerError(
                    f"{self.where}: has no output {name!r} (it serves {sorted(served)}), bundle "
                    f"{self.bundle.path} reads it"
                )
            dims = served[name]
            if dims and dims[-1] > 0 and dims[-1] != width:
                raise JetTaggerError(
                    f"{self.where}: output {name!r} has {dims[-1]} columns, bundle {self.bundle.path} has "
                    f"{width} ({', '.join(c.name for c in self.bundle.outputs.columns)[:200]})"
                )
        local = Path(self.bundle.onnx_path)
        if not local.is_file():  # a client-only bundle: the server's model is the model
            return
        if meta["hash"] and meta["hash"] != sha256(local):
            raise JetTaggerError(
                f"{self.where}: serves a different model.onnx than bundle {self.bundle.path} "
                "(re-export the repository with `jettagger export --triton`)"
            )
        if meta["md5"] and meta["md5"] != hashlib.md5(local.read_bytes()).hexdigest():  # the agent's choice
            raise JetTaggerError(
                f"{self.where}: its checksum (MD5 of 1/{MODEL_FILE}) differs from bundle "
                f"{self.bundle.path}'s {MODEL_FILE}"
            )

    @property
    def input_names(self) -> list[str]:
        return list(self.metadata()["inputs"])

    @property
    def output_names(self) -> list[str]:
        """The served outputs the bundle reads, in its card's order (the first one where it names none)."""
        names = self.bundle.outputs.names if self.bundle is not None else None
        return names or list(self.metadata()["outputs"])[:1]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output the bundle reads, each (jets, columns), in batches of the server's max batch size."""
        import tritonclient.grpc as tg
        import tritonclient.http as th

        tc: Any = th if self._http else tg
        step = self.metadata()["max_batch_size"]
        n = len(next(iter(inputs.values())))
        names = self.output_names
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, n, step):
            reqs = []
            for k in self.input_names:
                x = np.ascontiguousarray(inputs[k][start : start + step], dtype=np.float32)
                r = tc.InferInput(k, list(x.shape), "FP32")
                r.set_data_from_numpy(x)
                reqs.append(r)
            wanted = [tc.InferRequestedOutput(name) for name in names]
            res = self._call("inference", self.client.infer, self.model, reqs, outputs=wanted)
            for part, name in zip(parts, names):
                part.append(res.as_numpy(name))
        return [np.concatenate(p) for p in parts]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_local_server(
    repository: str | Path, python: str | Path, log: str | Path, threads: int = 1, timeout: float = 240
) -> tuple[Any, str, str]:
    """Start ``triton_server.py`` (PyTriton) under ``python`` on free loopback ports and wait until it
    serves every model of ``repository``. Returns (process, grpc URL, http URL); terminate the process
    when done. Raises JetTaggerError with the log's tail if it exits or is not ready in ``timeout`` s."""
    import subprocess

    grpc, http, metrics = free_port(), free_port(), free_port()
    script = Path(__file__).with_name("triton_server.py")
    cmd = [
        str(python),
        str(script),
        "--model-repository",
        str(repository),
        "--grpc-port",
        str(grpc),
        "--http-port",
        str(http),
        "--metrics-port",
        str(metrics),
        "--threads",
        str(threads),
    ]
    log = Path(log)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while "serving" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise JetTaggerError(f"local Triton server ({log}) did not start: {log.read_text()[-1500:]}")
        time.sleep(0.5)
    return proc, f"grpc://127.0.0.1:{grpc}", f"http://127.0.0.1:{http}"


@contextlib.contextmanager
def local_server(
    repository: str | Path, python: str | Path, log: str | Path, threads: int = 1
) -> Iterator[tuple[str, str]]:
    """:func:`start_local_server` for a ``with`` block: (grpc URL, http URL), the server stopped after."""
    import subprocess

    proc, grpc, http = start_local_server(repository, python, log, threads=threads)
    try:
        yield grpc, http
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
