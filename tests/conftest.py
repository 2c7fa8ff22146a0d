"""Shared fixtures: the bundled samples, ../shared reference material (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jettagger_coffea.data import sample_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
JETCLASS_CONFIGS = SHARED / "reference" / "jetclass"
PN_KIN_WEIGHTS = SHARED / "reference" / "weights" / "ParticleNet_kin.pt"


def shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def jetclass_config():
    def get(name: str = "kin") -> Path:
        return shared_file(JETCLASS_CONFIGS / f"JetClass_{name}.yaml")

    return get


@pytest.fixture(scope="session")
def tbqq_jetclass() -> Path:
    return sample_path("tbqq", "jetclass")


@pytest.fixture(scope="session")
def tbqq_nanoaod() -> Path:
    return sample_path("tbqq", "nanoaod")
