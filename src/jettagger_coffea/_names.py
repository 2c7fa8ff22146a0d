"""Plain data the command line's parser shows (the backend registry, the length cap), in a module that
imports nothing: building the parser, hence ``jettagger --help``, imports no numpy. Their homes re-export
them: :data:`.backends.BACKENDS`, :data:`.batching.MAX_LENGTH`, :data:`.precision.PRECISIONS`."""

#: backend name -> "module:Class"; each class makes itself with ``from_bundle(bundle, **options)``, whose
#: keyword parameters are the backend's options. Adding a backend: its file and one line here.
BACKENDS = {
    "onnx": "jettagger_coffea.backends:OnnxBackend",
    "torch": "jettagger_coffea.backends:TorchBackend",
    "triton": "jettagger_coffea.triton:TritonBackend",
}

#: the most particles (or vertices) a jet is padded to: a config's ``length`` and ``--padding N`` above it
#: are refused at load, since a fixed padding of 10^9 slots is a process the kernel kills, not a run;
#: ``$JETTAGGER_MAX_LENGTH`` raises (or lowers) it
MAX_LENGTH = 4096
MAX_LENGTH_ENV = "JETTAGGER_MAX_LENGTH"

#: ``--precision``'s choices; each reduced one and the backend that runs it (onnxruntime has no bf16 CPU
#: kernels worth the name)
PRECISIONS = ("fp32", "int8", "bf16")
BACKEND_OF = {"int8": "onnx", "bf16": "torch"}


def reduced(precision: str | None) -> tuple[str | None, str | None]:
    """(the reduced precision asked for, None for fp32 or none; the backend that runs it, or None)."""
    precision = None if precision in (None, "fp32") else precision
    return precision, BACKEND_OF.get(precision or "")
