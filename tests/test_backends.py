"""The one backend factory: a BackendSpec is checked when made, make_backend alone builds runners, and
process-local state (sessions, connections, torch models) never travels in a pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from jettagger_coffea import BackendSpec, JetTagger
from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.backends import BACKENDS, OnnxBackend, backend_options, make_backend
from jettagger_coffea.bundle import Bundle


def test_registry_names_every_backend_and_its_options():
    assert set(BACKENDS) == {"onnx", "torch", "triton"}
    assert backend_options("onnx") == ["threads", "precision"]
    assert backend_options("torch") == ["device", "dtype", "precision"]
    assert backend_options("triton") == ["server", "served_model"]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("onnx", {"server": "grpc://127.0.0.1:1"}, "--server goes with --backend triton (backend 'onnx')"),
        ("torch", {"threads": 2}, "--threads goes with --backend onnx (backend 'torch')"),
        ("onnx", {"colour": "red"}, "--colour is not a backend option (backend 'onnx')"),
        ("tpu", {}, "unknown backend 'tpu' (onnx, torch, triton)"),
    ],
)
def test_spec_refuses_what_does_not_fit(name, options, message):
    with pytest.raises(JetTaggerError) as err:
        BackendSpec.of(name, **options)
    assert str(err.value) == message


def test_spec_drops_unset_options_and_merges_into_a_spec():
    spec = BackendSpec.of("triton", server="grpc://h:8001", served_model=None)
    assert spec == BackendSpec("triton", (("server", "grpc://h:8001"),))
    assert BackendSpec.of(spec, served_model="m").options == (
        ("served_model", "m"),
        ("server", "grpc://h:8001"),
    )
    with pytest.raises(JetTaggerError, match="needs a server URL"):
        make_backend(BackendSpec.of("triton"), Bundle.load("pfn"))


def test_tagger_builds_its_backend_from_the_spec_and_pickles_without_the_session():
    tagger = JetTagger("pfn", threads=1)
    assert tagger.spec == BackendSpec("onnx", (("threads", 1),))
    assert isinstance(tagger.backend, OnnxBackend) and tagger.backend.threads == 1
    x = {g: np.ones((1, shape[1], 8), np.float32) for g, shape in tagger.config.input_shapes.items()}
    assert np.isfinite(tagger.backend.run(x)).all()
    assert tagger.backend._sess is not None
    copy = pickle.loads(pickle.dumps(tagger))
    assert copy.backend._sess is None and copy.backend.threads == 1 and copy.spec == tagger.spec
