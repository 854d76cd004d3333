"""Write a MONAI datalist for a local IXI copy (``IXI<NNN>-<site>-<NNNN>-{T1,T2,PD}.nii.gz``, one folder or
several, subjects matched by ``IXI<NNN>``); see :func:`common.data.prepare.prepare_ixi`.

Usage:
    python scripts/prepare_ixi.py /data/IXI-T1 /data/IXI-T2 /data/IXI-PD [--output /data/ixi_datalist.json]
        [--require "['t2','pd']"] [--fractions "[0.7,0.15,0.15]"] [--seed 0] [--affine_tol 1e-3]
        [--same_grid "[['t1','t2','pd']]"] [--dry_run]
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from common.data.prepare import prepare_ixi
from common.data.prepare_cli import run_prepare

__all__ = ["main"]


def main(
    *roots: str,
    output: str | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    dry_run: bool = False,
) -> None:
    """Check an IXI copy, write ``datalist.json`` (default: in the folders' common parent) and print a summary.

    Args:
        roots: one or several folders holding the IXI NIfTI files.
        output: datalist path or folder.
        require: keys each subject must have (default all of t1, t2, pd).
        fractions: training / validation / test fractions.
        seed: split seed.
        affine_tol: largest allowed absolute affine difference (mm).
        same_grid: groups of keys that must share shape and affine (default ``[['t2','pd']]``: IXI T1 is
            acquired on its own grid).
        dry_run: only check and report, write nothing.

    Raises:
        SystemExit: non-zero when a root does not exist, an argument is invalid or no subject is usable.
    """
    if not roots:
        raise SystemExit("prepare_ixi: error: give at least one folder holding IXI files.")
    run_prepare(
        "prepare_ixi",
        prepare_ixi,
        [str(r) for r in roots],
        output=output,
        require=require,
        fractions=fractions,
        seed=seed,
        affine_tol=affine_tol,
        same_grid=same_grid,
        write=not dry_run,
    )


if __name__ == "__main__":
    fire.Fire(main)
