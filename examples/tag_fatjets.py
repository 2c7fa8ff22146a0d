"""Tag the FatJets of a PFNano file and look at the W-tagged jet mass — copy this into your analysis.

python examples/tag_fatjets.py
"""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
from coffea.nanoevents import NanoEventsFactory

from jettagger_coffea.bundle import resolve
from jettagger_coffea.data import sample_path
from jettagger_coffea.nanoevents import PFNanoSchema
from jettagger_coffea.tagger import JetTagger

# 1. the tagger: a bundle folder (or a shipped name); the ONNX session is made once per process
tagger = JetTagger(resolve())  # the default shipped model
print("classes:", tagger.classes, "discriminants:", list(tagger.bundle.discriminants))

# 2. events: eager / virtual (coffea Runner) or dask (apply_to_fileset) all work the same way
events = NanoEventsFactory.from_root(
    {str(sample_path("wqq")): "Events"}, schemaclass=PFNanoSchema, mode="virtual"
).events()

# 3. scores attach to FatJet as score_<class> and score_<discriminant>
selected = (events.FatJet.pt > 500) & (abs(events.FatJet.eta) < 2)
fatjets = tagger.attach(events, jets=selected)
print("WvsQCD of the first jets:", ak.to_list(ak.flatten(fatjets.score_WvsQCD)[:5]))

# 4. a working point stored with the bundle (derived on a reference sample)
cut = tagger.bundle.working_points["WvsQCD"]["mistag1%"]
tagged = fatjets[fatjets.score_WvsQCD > cut]
eff = ak.sum(ak.num(tagged)) / ak.sum(ak.num(fatjets))
print(f"W-tag efficiency at 1% mistag on W jets: {eff:.3f}")

# 5. jets without constituents get NaN scores: count them, never lose them
n_empty = ak.sum(np.isnan(ak.flatten(fatjets.score_WvsQCD)))
print("jets without constituents:", n_empty)

h = hist.Hist.new.Reg(50, 0, 250, name="msd", label="Soft-drop mass [GeV]").Double()
h.fill(msd=ak.flatten(tagged.msoftdrop))
print(h)
