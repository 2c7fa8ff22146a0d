"""Reading PFNano files with coffea: a schema that stays quiet about collections PFNano files lack."""

from __future__ import annotations

from coffea.nanoevents import PFNanoAODSchema


class PFNanoSchema(PFNanoAODSchema):
    """:class:`coffea.nanoevents.PFNanoAODSchema` without the flood of 'Missing cross-reference index'
    warnings for collections (Electron, Jet, ...) that a jet-tagging PFNano file need not carry."""

    warn_missing_crossrefs = False


def open_events(
    path: str, mode: str = "eager", entry_start: int | None = None, entry_stop: int | None = None
):
    """Open the ``Events`` tree of a PFNano file as coffea NanoEvents."""
    from coffea.nanoevents import NanoEventsFactory

    kwargs = {"entry_start": entry_start, "entry_stop": entry_stop} if mode != "dask" else {}
    return NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=PFNanoSchema, mode=mode, **kwargs
    ).events()
