"""Write a MONAI datalist for a local BraTS 2021 (``_t1/_t1ce/_t2/_flair/_seg``) or 2023
(``-t1n/-t1c/-t2w/-t2f/-seg``) copy; see :func:`common.data.prepare.prepare_brats`.

Usage:
    python scripts/prepare_brats.py /data/BraTS2021 [--output /data/BraTS2021/datalist.json]
        [--require "['t1','t1ce']"] [--fractions "[0.7,0.15,0.15]"] [--seed 0] [--affine_tol 1e-3]
        [--same_grid "[['t1','t1ce','t2','flair','tumor_mask']]"] [--dry_run]
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from common.data.prepare import prepare_brats
from common.data.prepare_cli import run_prepare

__all__ = ["main"]


def main(
    root: str,
    output: str | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    dry_run: bool = False,
) -> None:
    """Check a BraTS copy, write ``datalist.json`` (default: in ``root``) and print a one-line summary.

    Args:
        root: folder holding the BraTS subject folders.
        output: datalist path or folder.
        require: keys each subject must have (default all of t1, t1ce, t2, flair, tumor_mask).
        fractions: training / validation / test fractions.
        seed: split seed.
        affine_tol: largest allowed absolute affine difference (mm).
        same_grid: groups of keys that must share shape and affine (default all keys).
        dry_run: only check and report, write nothing.

    Raises:
        SystemExit: non-zero when the root does not exist, an argument is invalid or no subject is usable.
    """
    run_prepare(
        "prepare_brats",
        prepare_brats,
        str(root),
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
