"""Tracks as JetClass's Delphes detector makes them: helix impact parameters in a 3.8 T solenoid, smeared
with CMS's measured resolution, only for particles born inside the tracker.

What Delphes does for JetClass (``delphes_card.tcl`` of jet-universe/jetclass_generation, modules
``ParticlePropagator`` and ``TrackSmearing``), and so what this module does:

- particles produced outside the tracker cylinder (r > 1.29 m or |z| > 3 m) are dropped;
- a charged particle's d0/dz are those of its helix at the point of closest approach to the beam line
  (the primary vertex is at the origin: JetClass has no pileup and no beam spot);
- d0 and dz are smeared with Gaussians whose widths come from a table in |eta| and pT (CMS tracker
  performance, arXiv:1405.6569, fig. 15), and the errors written are those widths; outside the table
  (pT < 0.18 GeV or |eta| > 2.5) the width is 0 and the value is left unsmeared;
- neutral particles carry 0 for all four.

Not emulated: tracking efficiency, momentum smearing and calorimeter towers (see docs/generator.md).
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

#: Solenoid field and tracker volume of the JetClass Delphes card.
BZ_TESLA = 3.8
TRACKER_RADIUS_MM = 1290.0
TRACKER_HALF_LENGTH_MM = 3000.0
#: pT [GeV] = C_LIGHT * B [T] * R [m] for a unit charge.
C_LIGHT = 0.299792458


@functools.cache
def resolution_table() -> tuple[np.ndarray, ...]:
    """(|eta| low, |eta| high, pT low, pT high, sigma_d0, sigma_dz) columns of the packaged table (mm)."""
    text = resources.files(__package__).joinpath("data/track_resolution.csv").read_text()
    rows = [line.split(",") for line in text.splitlines() if line and line[0].isdigit()]
    table = np.array(rows, dtype=np.float64)
    return tuple(table.T)


def ip_resolution(pt: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigma(d0), sigma(dz) in mm for tracks of this pT [GeV] and eta; 0 outside the table."""
    eta_lo, eta_hi, pt_lo, pt_hi, s_d0, s_dz = resolution_table()
    abs_eta = np.abs(eta)
    inside = (abs_eta[:, None] > eta_lo) & (abs_eta[:, None] <= eta_hi)
    inside &= (pt[:, None] > pt_lo) & (pt[:, None] <= pt_hi)
    # bins do not overlap: the product picks the one bin a track is in (or none -> 0)
    return inside @ s_d0, inside @ s_dz


def inside_tracker(vertex: np.ndarray) -> np.ndarray:
    """Production vertices (mm) inside the volume Delphes propagates particles from."""
    return (np.hypot(vertex[:, 0], vertex[:, 1]) <= TRACKER_RADIUS_MM) & (
        np.abs(vertex[:, 2]) <= TRACKER_HALF_LENGTH_MM
    )


def helix_impact_parameters(
    p4: np.ndarray, vertex: np.ndarray, charge: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Signed d0 and the z of closest approach (mm) of each charged particle's helix to the beam line.

    Sign as Delphes (and CMS): d0 = (x py - y px) / pT at the point of closest approach. For straight
    tracks this is the familiar (x py - y px) / pT at the production vertex.
    """
    px, py, pz = p4[:, 0], p4[:, 1], p4[:, 2]
    pt = np.maximum(np.hypot(px, py), 1e-12)
    x, y, z = vertex[:, 0], vertex[:, 1], vertex[:, 2]
    sign = np.where(charge < 0, -1.0, 1.0)
    radius = pt / (C_LIGHT * BZ_TESLA * np.maximum(np.abs(charge), 1e-12)) * 1e3  # mm
    cos_phi, sin_phi = px / pt, py / pt
    # centre of the circle: a positive charge in +z field turns clockwise
    cx, cy = x + sign * radius * sin_phi, y - sign * radius * cos_phi
    rc = np.maximum(np.hypot(cx, cy), 1e-12)
    d0 = sign * (rc - radius)
    # signed transverse arc length from the production point back to the closest approach
    ux, uy = (x - cx) / radius, (y - cy) / radius  # where the particle starts, seen from the centre
    vx, vy = -cx / rc, -cy / rc  # where the closest approach is
    turn = np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy)  # counter-clockwise angle
    arc = -sign * turn * radius
    dz = z + arc * pz / pt
    return d0, dz


def impact_parameters(
    p4: np.ndarray, vertex: np.ndarray, charge: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """d0, sigma(d0), dz, sigma(dz) in mm as JetClass stores them (0 for neutrals)."""
    charged = charge != 0
    d0, dz = helix_impact_parameters(p4, vertex, charge)
    pt = np.hypot(p4[:, 0], p4[:, 1])
    eta = np.arcsinh(np.divide(p4[:, 2], pt, out=np.zeros_like(pt), where=pt > 0))
    d0err, dzerr = ip_resolution(pt, eta)
    d0 = d0 + rng.normal(size=len(pt)) * d0err
    dz = dz + rng.normal(size=len(pt)) * dzerr
    return tuple(np.where(charged, a, 0.0) for a in (d0, d0err, dz, dzerr))  # type: ignore[return-value]
