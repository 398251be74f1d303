"""A simulated LHCb inclusive heavy-flavour trigger: two-track displaced vertices, signal and three backgrounds.

Kitouni, Nolte and Williams ("Robust and Provably Monotonic Networks", 2023, Section 4) classify
two-track displaced vertices (DVs) with four features: the scalar sum of the two tracks' transverse
momenta (sum pT), the smaller of the two tracks' impact-parameter chi2 with respect to the pp collision
(min chi2_IP), the quality of the DV fit (vertex chi2) and the flight distance of the DV relative to its
resolution (FD significance). This module simulates them from physics, so that every distribution
has a reason (all lengths in mm, momenta in GeV, times in ps):

Signal. A b or c hadron of mass M and lifetime tau (PDG values, rounded) is produced with
dN/dpT ~ pT / (1 + (pT/p0)^2)^3, p0 = 2 + 0.95 M GeV (a power-law tail as in measured heavy-flavour
spectra), pseudorapidity uniform in the LHCb acceptance 2 < eta < 5. It flies L = (p / M) c t with
t ~ Exp(tau) (or a given t), and decays inside the vertex detector (transverse radius below 25 mm). Two
of its daughters form the DV: isotropic in the rest frame with the two-body momentum p* for two-body
decays, or a share w ~ Beta(2, 2) of the largest momentum allowed for more bodies (an approximation
of phase space), then boosted. Each track's impact parameter is IP = L sin(angle to the flight
direction), so IP ~ c tau whatever the boost: displacement measures lifetime.

Measurement. The VELO resolution on a track's IP is 15 um + 29 um GeV / pT in each of two transverse
directions; chi2_IP = |measured IP|^2 / sigma^2. A share of tracks (5%) is measured with three times the
resolution while the fit assumes the nominal one (multiple scattering in material, wrong hits): the
non-Gaussian tails that make prompt tracks look displaced. The vertex chi2 (one degree of freedom) is
(DOCA / sigma_DOCA)^2 with DOCA the distance of closest approach of the two tracks (0 for a true
vertex), and the FD resolution combines the primary vertex (50 um) with the DV's longitudinal
resolution, sigma_DOCA / sin(opening angle).

Backgrounds (Section 4: "extremely large values of both displacement and momentum are more common for
backgrounds than for heavy-flavour signals"):

- prompt: two tracks from the pp collision (IP = 0, FD = 0) with a soft spectrum (p0 = 1 GeV); they pass
  the displacement requirements only through the resolution and its tails;
- material: hadronic interactions in the detector material at transverse radius 4-25 mm: a true
  vertex at a large displacement, with soft secondaries (p0 = 0.6 GeV) at wide angles;
- fake: a real prompt track combined with a fake ("ghost") track of mis-measured, large momentum
  (p0 = 6 GeV) that points nowhere in particular (IP ~ Exp(0.2 mm), DOCA ~ Exp(0.1 mm)).

Every candidate passes a pre-selection like the first trigger stage's: both tracks with pT > 0.5 GeV
and chi2_IP > 4, and vertex chi2 < 10. Background shares are shares after it (BACKGROUND_MIX).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

C_MM_PER_PS = 0.299792458
FEATURES = ("sum_pt", "min_ip_chi2", "vertex_chi2", "fd_significance")
"""The four DV features of Kitouni et al., Section 4, in this order."""
MONOTONE = (1, 1, 0, 1)
"""Physics' directions: more momentum and more displacement (chi2_IP, FD significance) are more signal-like."""
BACKGROUND_MIX = {"prompt": 0.8, "material": 0.1, "fake": 0.1}
"""Shares of the background after the pre-selection (an assumption of this simulation)."""
PRESELECTION = {"track_pt": 0.5, "track_ip_chi2": 4.0, "vertex_chi2": 10.0}
TAIL_SHARE, TAIL_FACTOR = 0.05, 3.0
"""Share of tracks measured with TAIL_FACTOR times the nominal resolution."""
PV_RESOLUTION = 0.05
VELO_RADIUS = 25.0

PION, KAON, PROTON, MUON = 0.13957, 0.49368, 0.93827, 0.10566


@dataclass(frozen=True)
class Decay:
    """A signal decay: parent `mass` (GeV) and `lifetime` (ps), the masses of the two DV tracks and of the rest."""

    family: str
    mass: float
    lifetime: float
    tracks: tuple[float, float]
    rest: float = 0.0
    """Summed mass of the other daughters (0: a two-body decay)."""


DECAYS = {
    "B0 -> K+ pi-": Decay("beauty", 5.2797, 1.519, (KAON, PION)),
    "Bs0 -> mu+ mu-": Decay("beauty", 5.3669, 1.520, (MUON, MUON)),
    "B+ -> J/psi(mu mu) K+": Decay("beauty", 5.2793, 1.638, (MUON, MUON), KAON),
    "B+ -> D0bar(K pi) pi+": Decay("beauty", 5.2793, 1.638, (KAON, PION), PION),
    "B0 -> D-(K pi pi) pi+": Decay("beauty", 5.2797, 1.519, (KAON, PION), 2 * PION),
    "Bs0 -> Ds-(K K pi) pi+": Decay("beauty", 5.3669, 1.520, (KAON, KAON), 2 * PION),
    "Lb0 -> Lc+(p K pi) pi-": Decay("beauty", 5.6196, 1.471, (PROTON, KAON), 2 * PION),
    "Bc+ -> J/psi(mu mu) pi+": Decay("beauty", 6.2745, 0.510, (MUON, MUON), PION),
    "D0 -> K- pi+": Decay("charm", 1.8648, 0.4103, (KAON, PION)),
    "D0 -> K- pi+ pi+ pi-": Decay("charm", 1.8648, 0.4103, (KAON, PION), 2 * PION),
    "D+ -> K- pi+ pi+": Decay("charm", 1.8697, 1.033, (KAON, PION), PION),
    "Ds+ -> K+ K- pi+": Decay("charm", 1.9683, 0.504, (KAON, KAON), PION),
    "Lc+ -> p K- pi+": Decay("charm", 2.2865, 0.2024, (PROTON, KAON), PION),
    "Xic+ -> p K- pi+": Decay("charm", 2.4677, 0.453, (PROTON, KAON), PION),
}
"""Benchmark decays (Kitouni et al. Fig. 6 used 24 beauty and 17 charm decays of the LHCb simulation)."""


@dataclass
class Candidates:
    """Simulated DVs: `features` (n, 4) in physical units (FEATURES order), their `kind`, and true `lifetime` (ps; NaN for background)."""

    features: np.ndarray
    kind: np.ndarray
    lifetime: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __len__(self) -> int:
        return len(self.features)

    def table(self) -> dict[str, np.ndarray]:
        """The features as named columns (e.g. for `pandas.DataFrame`), with the kind."""
        return {**{name: self.features[:, index] for index, name in enumerate(FEATURES)}, "kind": self.kind}


def log_features(features: np.ndarray) -> np.ndarray:
    """The models' inputs: log10 of each feature (the vertex chi2 and FD significance shifted by 0.1 to stay finite).

    An increasing change of variables, so monotonicity in the logs is monotonicity in the physical quantities,
    and a calibration scale uncertainty (a factor) becomes a constant shift.
    """
    features = np.asarray(features, dtype=np.float64)
    return np.log10(features + np.array([0.0, 0.0, 0.1, 0.1])).astype(np.float32)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _spectrum(n: int, p0: float, rng: np.random.Generator, minimum: float = 0.0) -> np.ndarray:
    """pT above `minimum` with dN/dpT ~ pT / (1 + (pT/p0)^2)^3, by inverting its CDF 1 - (1 + (pT/p0)^2)^-2."""
    start = 1 - (1 + (minimum / p0) ** 2) ** -2.0
    return p0 * np.sqrt((1 - rng.uniform(start, 1.0, size=n)) ** -0.5 - 1)


def _directions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with eta uniform in [2, 5] and uniform azimuth, and sin(theta)."""
    eta = rng.uniform(2.0, 5.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    theta = 2 * np.arctan(np.exp(-eta))
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1), np.sin(theta)


def _isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(n, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each row of `direction` and to each other."""
    helper = np.where(np.abs(direction[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    first = np.cross(direction, helper)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    return first, np.cross(direction, first)


def _two_body(mass: np.ndarray | float, first: float, second: float) -> np.ndarray:
    """The daughters' momentum in the rest frame of a two-body decay (Källén function)."""
    mass = np.asarray(mass, dtype=np.float64)
    value = (mass**2 - (first + second) ** 2) * (mass**2 - (first - second) ** 2)
    return np.sqrt(np.maximum(value, 0.0)) / (2 * mass)


def _resolution(pt: np.ndarray) -> np.ndarray:
    """VELO impact-parameter resolution per transverse direction (mm): 15 um + 29 um GeV / pT."""
    return 0.015 + 0.029 / pt


def _measure(
    rng: np.random.Generator,
    pts: tuple[np.ndarray, np.ndarray],
    ips: tuple[np.ndarray, np.ndarray],
    doca: np.ndarray,
    flight: np.ndarray,
    opening: np.ndarray,
) -> np.ndarray:
    """(n, 4) features: sum pT, min chi2_IP, vertex chi2, FD significance, with resolution tails."""
    n = len(doca)
    sigma = [_resolution(pt) for pt in pts]
    tails = [np.where(rng.uniform(size=n) < TAIL_SHARE, TAIL_FACTOR, 1.0) for _ in pts]
    chi2 = [((ip + s * t * rng.normal(size=n)) ** 2 + (s * t * rng.normal(size=n)) ** 2) / s**2 for ip, s, t in zip(ips, sigma, tails)]
    sigma_doca = np.hypot(sigma[0], sigma[1])
    tail = np.maximum(tails[0], tails[1])
    vertex = ((doca + sigma_doca * tail * rng.normal(size=n)) / sigma_doca) ** 2
    sigma_fd = np.hypot(PV_RESOLUTION, sigma_doca / np.maximum(np.sin(opening), 1e-3))
    significance = np.abs(flight + sigma_fd * tail * rng.normal(size=n)) / sigma_fd
    return np.stack([pts[0] + pts[1], np.minimum(chi2[0], chi2[1]), vertex, significance], axis=1)


def _preselected(features: np.ndarray, pts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    cut = PRESELECTION
    passed = (pts[0] > cut["track_pt"]) & (pts[1] > cut["track_pt"])
    passed &= features[:, 1] > cut["track_ip_chi2"]  # min chi2_IP > 4: both tracks
    return passed & (features[:, 2] < cut["vertex_chi2"])


def _signal_chunk(decay: Decay, n: int, rng: np.random.Generator, lifetime: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = _spectrum(n, 2.0 + 0.95 * decay.mass, rng)
    direction, sin_theta = _directions(n, rng)
    momentum = pt / sin_theta
    t = rng.exponential(decay.lifetime, n) if lifetime is None else lifetime
    flight = momentum / decay.mass * C_MM_PER_PS * t
    inside = flight * sin_theta < VELO_RADIUS
    first, second = _basis(direction)
    gamma = np.sqrt(1 + (momentum / decay.mass) ** 2)
    beta_gamma = momentum / decay.mass
    u1 = _isotropic(n, rng)
    tracks = []
    for index, mass in enumerate(decay.tracks):
        if decay.rest == 0.0:
            star = _two_body(decay.mass, *decay.tracks) * np.ones(n)
            unit = u1 if index == 0 else -u1
        else:
            others = decay.tracks[1 - index] + decay.rest
            star = _two_body(decay.mass, mass, others) * rng.beta(2.0, 2.0, n)
            unit = u1 if index == 0 else _isotropic(n, rng)
        energy = np.sqrt(star**2 + mass**2)
        along = gamma * star * unit[:, 2] + beta_gamma * energy
        lab = along[:, None] * direction + (star * unit[:, 0])[:, None] * first + (star * unit[:, 1])[:, None] * second
        tracks.append(lab)
    pts = tuple(np.hypot(track[:, 0], track[:, 1]) for track in tracks)
    sines = [np.linalg.norm(np.cross(track, direction), axis=1) / np.linalg.norm(track, axis=1) for track in tracks]
    cosine = np.sum(tracks[0] * tracks[1], axis=1) / (np.linalg.norm(tracks[0], axis=1) * np.linalg.norm(tracks[1], axis=1))
    opening = np.arccos(np.clip(cosine, -1, 1))
    features = _measure(rng, (pts[0], pts[1]), (flight * sines[0], flight * sines[1]), np.zeros(n), flight, opening)
    return features, t, _preselected(features, (pts[0], pts[1])) & inside


def signal(
    n: int, decay: str = "B0 -> K+ pi-", *, seed: int | np.random.Generator = 0, lifetime: tuple[float, float] | None = None
) -> Candidates:
    """`n` pre-selected signal DVs of `decay` (a key of DECAYS), with proper lifetimes ~ Exp(tau).

    lifetime=(low, high) draws the proper lifetime uniformly in that range instead (for efficiency
    against lifetime, Kitouni et al. Fig. 5).
    """
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}: choose one of {', '.join(DECAYS)}")
    n = _count(n)
    rng = _generator(seed)
    parts, times, total, acceptance = [], [], 0, 0.5
    while total < n:
        size = _chunk(n - total, acceptance)
        draw = rng.uniform(lifetime[0], lifetime[1], size) if lifetime is not None else None
        features, t, passed = _signal_chunk(DECAYS[decay], size, rng, draw)
        parts.append(features[passed])
        times.append(t[passed])
        total += int(passed.sum())
        acceptance = max(float(passed.mean()), 1e-4)
    return Candidates(np.concatenate(parts)[:n], np.full(n, decay, dtype=object), np.concatenate(times)[:n])


def _prompt_chunk(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cut = PRESELECTION["track_pt"]  # tracks below it never pass: draw above it (the same distribution after the cut)
    pts = (_spectrum(n, 1.0, rng, cut), _spectrum(n, 1.0, rng, cut))
    (d1, _), (d2, _) = _directions(n, rng), _directions(n, rng)
    opening = np.arccos(np.clip(np.sum(d1 * d2, axis=1), -1, 1))
    zero = np.zeros(n)
    features = _measure(rng, pts, (zero, zero), zero, zero, opening)
    return features, _preselected(features, pts)


def _material_chunk(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    radius = rng.uniform(4.0, VELO_RADIUS, n)
    _, sin_theta = _directions(n, rng)
    flight = radius / sin_theta
    angles = np.abs(rng.normal(0.0, 0.25, (2, n))) + 0.02
    pts = (_spectrum(n, 0.6, rng, PRESELECTION["track_pt"]), _spectrum(n, 0.6, rng, PRESELECTION["track_pt"]))
    opening = angles[0] + angles[1] * rng.uniform(0.3, 1.0, n)
    features = _measure(rng, pts, (flight * np.sin(angles[0]), flight * np.sin(angles[1])), np.zeros(n), flight, opening)
    return features, _preselected(features, pts)


def _fake_chunk(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pts = (_spectrum(n, 1.0, rng, PRESELECTION["track_pt"]), _spectrum(n, 6.0, rng, PRESELECTION["track_pt"]))
    ips = (np.zeros(n), rng.exponential(0.2, n))
    opening = np.abs(rng.normal(0.0, 0.05, n)) + 1e-3
    features = _measure(rng, pts, ips, rng.exponential(0.1, n), rng.exponential(5.0, n), opening)
    return features, _preselected(features, pts)


_BACKGROUNDS = {"prompt": _prompt_chunk, "material": _material_chunk, "fake": _fake_chunk}


def background(n: int, *, seed: int | np.random.Generator = 0, mix: dict[str, float] | None = None) -> Candidates:
    """`n` pre-selected background DVs, drawn from the kinds in `mix` (default BACKGROUND_MIX) in those shares."""
    mix = dict(BACKGROUND_MIX if mix is None else mix)
    unknown = set(mix) - set(_BACKGROUNDS)
    shares = np.array(list(mix.values()), dtype=np.float64)
    if unknown or not len(shares) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"mix must give non-negative shares of {', '.join(_BACKGROUNDS)}, got {mix!r}")
    n = _count(n)
    rng = _generator(seed)
    counts = rng.multinomial(n, shares / shares.sum())
    features, kinds = [], []
    for kind, count in zip(mix, counts):
        rows, total, acceptance = [np.empty((0, len(FEATURES)))], 0, 0.1
        while total < count:
            drawn, passed = _BACKGROUNDS[kind](_chunk(count - total, acceptance), rng)
            rows.append(drawn[passed])
            total += int(passed.sum())
            acceptance = max(float(passed.mean()), 1e-4)
        features.append(np.concatenate(rows)[:count])
        kinds.append(np.full(count, kind, dtype=object))
    order = rng.permutation(n)
    return Candidates(np.concatenate(features)[order], np.concatenate(kinds)[order], np.full(n, np.nan))


def _chunk(missing: int, acceptance: float) -> int:
    """How many to draw for `missing` accepted candidates at the acceptance seen so far (with a 20% margin)."""
    return int(min(max(1.2 * missing / acceptance, 1000), 2_000_000))


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)
