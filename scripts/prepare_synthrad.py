"""Write a MONAI datalist for a local SynthRAD2023 Task 1 copy
(``<root>/Task1/{brain,pelvis}/<subject>/{mr,ct,mask}.nii.gz``; ``root`` may also be ``Task1`` or one
region folder); see :func:`common.data.prepare.prepare_synthrad`.

Usage:
    python scripts/prepare_synthrad.py /data/SynthRAD2023 [--regions "['brain']"] [--output DIR_OR_JSON]
        [--require "['mr','ct']"] [--fractions "[0.7,0.15,0.15]"] [--seed 0] [--affine_tol 1e-3]
        [--same_grid "[['mr','ct','brain_mask']]"] [--dry_run]
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from common.data.prepare import prepare_synthrad
from common.data.prepare_cli import run_prepare

__all__ = ["main"]


def main(
    root: str,
    regions: str | Sequence[str] = ("brain", "pelvis"),
    output: str | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    dry_run: bool = False,
) -> None:
    """Check a SynthRAD2023 Task 1 copy, write ``datalist.json`` (default: in ``root``) and print a summary.

    Args:
        root: the data set folder, its ``Task1`` folder or one region folder.
        regions: regions to include (brain, pelvis).
        output: datalist path or folder.
        require: keys each subject must have (default all of mr, ct, brain_mask).
        fractions: training / validation / test fractions.
        seed: split seed.
        affine_tol: largest allowed absolute affine difference (mm).
        same_grid: groups of keys that must share shape and affine (default all keys).
        dry_run: only check and report, write nothing.

    Raises:
        SystemExit: non-zero when the root or its region folders do not exist, an argument is invalid or
            no subject is usable.
    """
    run_prepare(
        "prepare_synthrad",
        prepare_synthrad,
        str(root),
        output=output,
        require=require,
        fractions=fractions,
        seed=seed,
        affine_tol=affine_tol,
        same_grid=same_grid,
        regions=regions,
        write=not dry_run,
    )


if __name__ == "__main__":
    fire.Fire(main)
