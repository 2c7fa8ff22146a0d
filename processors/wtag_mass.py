"""W-tagged jet mass: the soft-drop mass of FatJets passing a WvsQCD working point, per dataset.

Run it on the bundled samples with the default model:

    python processors/wtag_mass.py --wp mistag1%
"""

from __future__ import annotations

import argparse
import sys

import awkward as ak
import hist
from coffea import processor

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import resolve
from jettagger_coffea.data import default_fileset
from jettagger_coffea.nanoevents import PFNanoSchema
from jettagger_coffea.tagger import JetTagger


class WTagMass(processor.ProcessorABC):
    def __init__(self, bundle=None, discriminant: str = "WvsQCD", wp: str = "mistag1%") -> None:
        self.tagger = JetTagger(resolve(bundle))
        self.discriminant = discriminant
        wps = self.tagger.bundle.working_points.get(discriminant, {})
        if wp not in wps:
            have = ", ".join(wps) or "none"
            raise JetTaggerError(f"--wp {wp!r}: {self.tagger.bundle.name} has {have} for {discriminant}")
        self.threshold = wps[wp]

    def process(self, events):
        sel = (events.FatJet.pt > 500) & (abs(events.FatJet.eta) < 2)
        fj = self.tagger.attach(events, jets=sel)
        tagged = fj[fj[f"score_{self.discriminant}"] > self.threshold]
        h = (
            hist.Hist.new.StrCat([], growth=True, name="dataset")
            .StrCat(["all", "tagged"], name="category")
            .Reg(50, 0, 250, name="msd", label="Soft-drop mass [GeV]")
            .Double()
        )
        ds = events.metadata["dataset"]
        h.fill(dataset=ds, category="all", msd=ak.flatten(fj.msoftdrop))
        h.fill(dataset=ds, category="tagged", msd=ak.flatten(tagged.msoftdrop))
        return {"msd": h}

    def postprocess(self, accumulator):
        return accumulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle folder or shipped name (default: models/DEFAULT)")
    ap.add_argument("--wp", default="mistag1%", help="working point of WvsQCD")
    args = ap.parse_args()
    try:
        proc = WTagMass(args.model, wp=args.wp)
    except JetTaggerError as err:
        print(f"wtag_mass: error: {err}", file=sys.stderr)
        sys.exit(2)
    runner = processor.Runner(processor.IterativeExecutor(), schema=PFNanoSchema, chunksize=500)
    out = runner(default_fileset(), proc, treename="Events")
    h = out["msd"]
    for ds in h.axes["dataset"]:
        n_all, n_tag = h[ds, "all", :].sum(flow=True), h[ds, "tagged", :].sum(flow=True)
        print(f"{ds:6s} tagged {n_tag:6.0f} / {n_all:6.0f} = {n_tag / n_all:.3f}")


if __name__ == "__main__":
    main()
