"""What a generation run does: processes, selection, conventions (validated once, up front)."""

from __future__ import annotations

import dataclasses

#: Pythia 8 settings of each process; the label is the JetClass class the truth-matched jets get.
PROCESSES: dict[str, dict] = {
    "qcd": {
        "label": "QCD",
        "settings": ["HardQCD:all = on"],
        "resonance": None,
    },
    "wqq": {
        "label": "Wqq",
        "settings": [
            "WeakBosonAndParton:qqbar2Wg = on",
            "WeakBosonAndParton:qg2Wq = on",
            "24:onMode = off",
            "24:onIfAny = 1 2 3 4 5",
        ],
        "resonance": 24,
    },
    "zqq": {
        "label": "Zqq",
        "settings": [
            "WeakBosonAndParton:qqbar2gmZg = on",
            "WeakBosonAndParton:qg2gmZq = on",
            "WeakZ0:gmZmode = 2",
            "23:onMode = off",
            "23:onIfAny = 1 2 3 4 5",
        ],
        "resonance": 23,
    },
    "tbqq": {
        "label": "Tbqq",
        "settings": [
            "Top:gg2ttbar = on",
            "Top:qqbar2ttbar = on",
            "24:onMode = off",
            "24:onIfAny = 1 2 3 4 5",
        ],
        "resonance": 6,
    },
    "hbb": {
        "label": "Hbb",
        "settings": [
            "HiggsSM:gg2Hg(l:t) = on",
            "HiggsSM:qg2Hq(l:t) = on",
            "HiggsSM:qqbar2Hg(l:t) = on",
            "25:onMode = off",
            "25:onIfAny = 5",
        ],
        "resonance": 25,
    },
}

#: The ten JetClass classes, in JetClass order; every jetclass file carries all ten label branches.
JETCLASS_LABELS = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Everything that determines the generated jets (the seed and the block size fix them bit for bit)."""

    process: str
    njets: int
    seed: int = 1
    radius: float = 0.8
    pt_min: float = 500.0
    pt_max: float = 1000.0
    eta_max: float = 2.0
    mpi: bool = True
    ecm: float = 13000.0
    block_size: int = 250

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            msg = f"unknown process {self.process!r}; choose from {', '.join(PROCESSES)}"
            raise ValueError(msg)
        if not self.radius > 0:
            raise ValueError(f"--radius must be > 0, got {self.radius}")
        if not self.pt_max > self.pt_min:
            raise ValueError(f"empty pT window: pt_min={self.pt_min} >= pt_max={self.pt_max}")
        if self.pt_min < 0:
            raise ValueError(f"pt_min must be >= 0, got {self.pt_min}")
        if not self.eta_max > 0:
            raise ValueError(f"--eta-max must be > 0, got {self.eta_max}")
        if self.njets <= 0:
            raise ValueError(f"--njets must be > 0, got {self.njets}")
        if not 0 <= self.seed < 900_000_000:
            raise ValueError(f"--seed must be in [0, 900000000), got {self.seed}")

    @property
    def label(self) -> str:
        return PROCESSES[self.process]["label"]

    def pythia_settings(self, seed: int) -> list[str]:
        pthat_min = max(self.pt_min - 50.0, 20.0)
        return [
            f"Beams:eCM = {self.ecm}",
            f"PhaseSpace:pTHatMin = {pthat_min}",
            f"PhaseSpace:pTHatMax = {self.pt_max + 100.0}",
            f"PartonLevel:MPI = {'on' if self.mpi else 'off'}",
            "Random:setSeed = on",
            f"Random:seed = {seed}",
            "Next:numberCount = 0",
            "Next:numberShowEvent = 0",
            "Next:numberShowInfo = 0",
            "Next:numberShowProcess = 0",
            "Init:showChangedSettings = off",
            "Init:showChangedParticleData = off",
            "Init:showProcesses = off",
            "Print:quiet = on",
            *PROCESSES[self.process]["settings"],
        ]
