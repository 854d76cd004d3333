"""MR / CT physics of the brain phantom (:mod:`common.data.phantom`): tissue parameters and signal equations.

Images mix the per-tissue signals of the signal equations (:class:`MRSequences`) of the 3 T
``TISSUE_PARAMETERS`` by membership; gadolinium: 1/T1' = 1/T1 + r1 C. Units: MR arbitrary (nominal white
matter ~1000 after the gain of :func:`common.data.phantom.generate_subject`), ADC mm^2/s, CT HU. 3 T values:
Wansapura et al., JMRI 9:531 (1999); Stanisz et al., MRM 54:507 (2005); r1: Rohrer et al., Invest. Radiol.
40:715 (2005).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from common.data.phantom_anatomy import (
    BACKGROUND,
    BONE,
    CSF,
    DEEP_GM,
    EDEMA,
    ENHANCING,
    FAT,
    GM,
    NECROSIS,
    SKIN,
    VESSEL,
    WM,
)

__all__ = [
    "IMAGE_KEYS",
    "GD_RELAXIVITY",
    "TissueParams",
    "TISSUE_PARAMETERS",
    "MRSequences",
    "DEFAULT_SEQUENCES",
]

IMAGE_KEYS = ("t1", "t2", "flair", "adc", "t1ce", "ct")
GD_RELAXIVITY = 4.0  # r1 of a gadolinium chelate at 3 T, 1/(mM s)
TissueParams = namedtuple("TissueParams", "pd t1 t2 t2s adc ct gd")
TissueParams.__doc__ = "Proton density (water = 1), T1, T2, T2* (ms), ADC (mm^2/s), CT number (HU), gadolinium (mM)."
TISSUE_PARAMETERS: dict[int, TissueParams] = {
    BACKGROUND: TissueParams(0.00, 1000.0, 1.0, 1.0, 0.0, -1000.0, 0.0),
    CSF: TissueParams(1.00, 4000.0, 2000.0, 1000.0, 3.0e-3, 5.0, 0.0),
    GM: TissueParams(0.80, 1330.0, 110.0, 60.0, 0.85e-3, 40.0, 0.0),
    WM: TissueParams(0.69, 830.0, 80.0, 50.0, 0.75e-3, 30.0, 0.0),
    DEEP_GM: TissueParams(0.76, 1100.0, 70.0, 35.0, 0.78e-3, 37.0, 0.0),
    VESSEL: TissueParams(0.85, 1650.0, 150.0, 60.0, 1.6e-3, 45.0, 0.6),
    BONE: TissueParams(0.05, 250.0, 2.0, 0.5, 0.0, 1400.0, 0.0),
    FAT: TissueParams(0.90, 380.0, 130.0, 60.0, 0.02e-3, -100.0, 0.0),
    SKIN: TissueParams(0.75, 1400.0, 40.0, 30.0, 1.5e-3, 45.0, 0.0),
    NECROSIS: TissueParams(0.95, 2500.0, 500.0, 200.0, 2.4e-3, 15.0, 0.0),
    EDEMA: TissueParams(0.88, 1700.0, 230.0, 100.0, 1.4e-3, 22.0, 0.0),
    ENHANCING: TissueParams(0.85, 1500.0, 140.0, 70.0, 1.0e-3, 40.0, 0.4),
}


@dataclass(frozen=True)
class MRSequences:
    """Sequence parameters (TR, TE, TI in ms; flip angle in degrees) and signal equations. T1w spoiled gradient
    echo: ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``, ``E1 = exp(-TR/T1)``; T2w spin echo:
    ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``; FLAIR: ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``,
    the default TI = T1 ln(2 / (1 + exp(-TR/T1))) nulls CSF (T1 = 4000 ms) at TR = 9000 ms."""

    t1_tr: float = 20.0
    t1_te: float = 4.0
    t1_flip: float = 20.0
    t2_tr: float = 5000.0
    t2_te: float = 100.0
    flair_tr: float = 9000.0
    flair_te: float = 120.0
    flair_ti: float = 2370.0

    def t1w(self, pd: ArrayLike, t1: ArrayLike, t2s: ArrayLike) -> np.ndarray:
        e1, a = np.exp(-self.t1_tr / t1), np.deg2rad(self.t1_flip)
        return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-self.t1_te / t2s)

    def t2w(self, pd: ArrayLike, t1: ArrayLike, t2: ArrayLike) -> np.ndarray:
        return pd * (1 - np.exp(-self.t2_tr / t1)) * np.exp(-self.t2_te / t2)

    def flair(self, pd: ArrayLike, t1: ArrayLike, t2: ArrayLike) -> np.ndarray:
        return (
            pd * np.abs(1 - 2 * np.exp(-self.flair_ti / t1) + np.exp(-self.flair_tr / t1)) * np.exp(-self.flair_te / t2)
        )


DEFAULT_SEQUENCES = MRSequences()


def _mix_signals(frac, params, tex, gd_het, seq: MRSequences, relaxivity: float):
    """Sums over tissues of membership x signal (flat) and the gadolinium map (mM). The flat texture fields scale
    PD, T1, T2 (T2*, ADC follow T2); ``t1ce`` uses 1/T1' = 1/T1 + r1 C where C > 0, the ``t1`` numbers elsewhere."""
    acc = {k: np.zeros(frac[0].size, np.float32) for k in IMAGE_KEYS}
    gd = np.zeros_like(acc["t1"])
    for code, p in params.items():
        idx = np.flatnonzero(frac[code] > 0)
        f = frac[code].ravel()[idx]
        acc["ct"][idx] += f * np.float32(p.ct)
        if p.pd <= 0:
            continue
        pd, t1, t2 = p.pd * tex[0][idx], p.t1 * tex[1][idx], p.t2 * tex[2][idx]
        s1 = seq.t1w(pd, t1, p.t2s * tex[2][idx])
        acc["t1"][idx] += f * s1
        if p.gd > 0:
            conc = p.gd * (gd_het[idx] if code == ENHANCING else np.ones_like(f))
            gd[idx] += f * conc
            s1 = seq.t1w(pd, 1.0 / (1.0 / t1 + relaxivity * 1e-3 * conc), p.t2s * tex[2][idx])
        acc["t1ce"][idx] += f * s1
        acc["t2"][idx] += f * seq.t2w(pd, t1, t2)
        acc["flair"][idx] += f * seq.flair(pd, t1, t2)
        acc["adc"][idx] += f * (p.adc * tex[2][idx])
    return acc, gd
