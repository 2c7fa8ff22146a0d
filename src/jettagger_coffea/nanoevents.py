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


def _fill_fields(ntuple) -> None:
    """Every field's direct subfields (an anonymous subfield replaced by its own), from one pass over the
    field records: the lists uproot's ``HasFields.fields`` builds, in its order."""
    records, fields = ntuple.field_records, ntuple.all_fields
    children: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        if record.parent_field_id != i:
            children.setdefault(record.parent_field_id, []).append(i)

    def resolve(fid: int) -> list:
        field = fields[fid]
        if field._fields is None:
            out: list = []
            for i in children.get(fid, ()):
                out.extend(resolve(i) if fields[i].is_anonymous else [fields[i]])
            field._fields = out
        return field._fields

    for fid in range(len(records)):
        resolve(fid)


def index_rntuple_fields() -> None:
    """uproot 5.7 finds a field's subfields by scanning every field record, and coffea asks every field
    once per file open (that is, per chunk): quadratic, ~10 s a chunk for PFNano's 1802 branches
    (scikit-hep/uproot5#1637). The first field asked fills them all (:func:`_fill_fields`)."""
    from uproot.behaviors.RNTuple import HasFields, RNTuple

    scan = HasFields.fields
    if hasattr(scan.fget, "scan"):
        return

    def fields(self):
        if self._fields is None and not isinstance(self, RNTuple):
            _fill_fields(self.ntuple)
        return scan.fget(self)

    fields.scan = scan.fget  # type: ignore[attr-defined]  # uproot's own, for the test that compares
    HasFields.fields = property(fields, doc=scan.__doc__)  # type: ignore[method-assign]


index_rntuple_fields()
