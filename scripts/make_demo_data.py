"""Generate the project's demo data set: the physics-based multi-contrast brain phantom.

Usage (from the repository root)::

    python scripts/make_demo_data.py --output_dir data/demo --num_subjects 12 \
        --shape "[96,112,96]" --spacing "[1,1,1]" --seed 0

The contrast-enhancement demo set that ``scripts/run_demo.py`` writes adds
``--tumor_radius_range "[0.25,0.4]" --num_tumors "[1,3]"``.

Writes ``<output_dir>/phantom_XXX/{t1,t2,flair,adc,t1ce,ct,brain_mask,tumor_mask,labels}.nii.gz`` and
``<output_dir>/datalist.json`` (MONAI ``load_decathlon_datalist`` format with ``training``, ``validation``
and ``test`` lists, paths relative to the datalist). See :mod:`common.data.phantom` for the physics and
the label codes. Invalid arguments stop with one error message and exit status 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import fire

from common.data.datalist import SPLITS
from common.data.phantom import generate_dataset

__all__ = ["main", "cli"]

logger = logging.getLogger("make_demo_data")


def main(
    output_dir: str = "data/demo",
    num_subjects: int = 12,
    shape: Sequence[int] = (96, 112, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    tumor_radius_range: Sequence[float] | None = None,
    num_tumors: int | Sequence[int] | None = None,
) -> Path:
    """Generate ``num_subjects`` phantom subjects and their datalist, then print a one-line summary.

    Args:
        output_dir: folder that receives one sub-folder per subject and ``datalist.json``.
        num_subjects: number of subjects (>= 1; at least 3 gives every split a subject).
        shape: grid size (X, Y, Z), three integers >= 8.
        spacing: voxel size in mm, three positive numbers.
        seed: base seed (non-negative integer); subject ``i`` uses ``subject_seed(seed, i)``.
        tumor_radius_range: (low, high) enhancing-lesion radius as a fraction of the brain's smallest semi-axis
            (default: the phantom's (0.15, 0.28); the demo of the contrast-enhancement bundles uses (0.25, 0.4)).
        num_tumors: tumours per subject, a count or an inclusive (min, max) range (default: the phantom's (0, 3);
            the demo uses (1, 3), so every split has an enhancing lesion). ``scripts/run_demo.py`` writes
            ``data/demo`` with both demo options.

    Returns:
        the path of the datalist.

    Raises:
        ValueError: on an invalid argument (the message names it).
    """
    if isinstance(num_subjects, bool) or not isinstance(num_subjects, int) or num_subjects < 1:
        raise ValueError(f"num_subjects must be a positive integer, got {num_subjects!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if not isinstance(output_dir, (str, Path)) or not str(output_dir):
        raise ValueError(f"output_dir must be a folder path, got {output_dir!r}.")
    for name, value, ok, what in (
        ("shape", shape, lambda v: isinstance(v, int) and v >= 8, 'three integers >= 8, e.g. "[96,112,96]"'),
        ("spacing", spacing, lambda v: isinstance(v, (int, float)) and v > 0, 'three positive numbers, e.g. "[1,1,1]"'),
    ):
        if (
            isinstance(value, str)
            or not isinstance(value, Sequence)
            or len(value) != 3
            or not all(ok(v) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"{name} must be {what}; got {value!r}.")
    logger.info(
        "Generating %d phantom subject(s), shape %s, spacing %s mm, seed %d, into %s",
        num_subjects,
        shape,
        spacing,
        seed,
        output_dir,
    )
    start = time.perf_counter()
    options = {} if tumor_radius_range is None else {"tumor_radius_range": tuple(float(v) for v in tumor_radius_range)}
    if num_tumors is not None:
        options["num_tumors"] = num_tumors if isinstance(num_tumors, int) else tuple(num_tumors)
    path = generate_dataset(output_dir, num_subjects, shape, spacing, seed, **options)
    elapsed = time.perf_counter() - start
    counts = {name: len(rows) for name, rows in json.loads(path.read_text()).items() if name in SPLITS}
    logger.info(
        "Wrote %d subject(s) in %.1f s (%s)",
        num_subjects,
        elapsed,
        ", ".join(f"{name}: {n}" for name, n in counts.items()),
    )
    print(
        f"{num_subjects} phantom subjects ({' / '.join(f'{n} {name}' for name, n in counts.items())}) "
        f"written in {elapsed:.1f} s; datalist: {path}"
    )
    return path


def cli(argv: Sequence[str] | None = None) -> int:
    """Run :func:`main` from command-line arguments (``sys.argv`` by default); returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(main, command=None if argv is None else list(argv), serialize=lambda _: None)
    except (ValueError, OSError) as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
