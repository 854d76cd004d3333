"""Fail-fast checks of a bundle's inputs, run before anything is trained or written.

Every bad input of the bundle contract (section 6) stops here with one :class:`InputDataError` naming the
file or key and what was expected: a missing datalist or file, a missing modality key, a corrupt file,
NaN/Inf voxels, the wrong number of channels or dimensions, paired images that disagree in shape or
affine, an unwritable output folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

__all__ = ["IMAGE_EXTENSIONS", "InputDataError", "load_datalist", "check_cases", "check_output_dir", "read_image"]

DEMO_HINT = (
    "generate the demo data with `python scripts/make_demo_data.py --output_dir data/demo`, "
    "or pass --dataset_dir DIR (a folder holding datalist.json) or --datalist FILE"
)


IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")


class InputDataError(ValueError):
    """A bundle input is missing, unreadable or inconsistent; the message names the file or key."""


def load_datalist(datalist: str, key: str, dataset_dir: str | None = None) -> list[dict]:
    """Load one list of a MONAI datalist, with paths resolved against the datalist's folder.

    Raises:
        InputDataError: the datalist is missing or unreadable, or has no (or an empty) ``key`` list.
    """
    if not os.path.isfile(datalist):
        raise InputDataError(f"datalist '{datalist}' does not exist: {DEMO_HINT}.")
    try:
        with open(datalist) as f:
            content = json.load(f)
    except Exception as e:  # JSON errors and the like
        raise InputDataError(f"datalist '{datalist}' cannot be read: {e}.") from e
    if not isinstance(content, dict) or key not in content:
        raise InputDataError(f"datalist '{datalist}' has no '{key}' list.")
    if not content[key]:
        raise InputDataError(f"datalist '{datalist}' has an empty '{key}' list.")
    base_dir = os.path.dirname(os.path.abspath(datalist))
    items = load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=key, base_dir=base_dir)
    # MONAI joins only paths that exist; join missing image paths too, so errors name the full path
    for item in items:
        for k, v in item.items():
            if isinstance(v, str) and not os.path.isabs(v) and v.lower().endswith(IMAGE_EXTENSIONS):
                item[k] = os.path.normpath(os.path.join(base_dir, v))
    return items


def read_image(path: str, load_data: bool = True) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    """Read ``(shape, affine, data-or-None)`` of a NIfTI, or of anything ITK reads (.mha, .nrrd, DICOM).

    NIfTI headers are read without loading voxels when ``load_data`` is False. Affines are RAS.

    Raises:
        InputDataError: the file is missing or cannot be read.
    """
    if not os.path.exists(path):
        raise InputDataError(f"input file '{path}' does not exist.")
    try:
        if not load_data and str(path).endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(path)
            return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64), None
        img = LoadImage(image_only=True)(path)
        data = np.asarray(img)
        return tuple(data.shape), np.asarray(img.affine, dtype=np.float64), data
    except Exception as e:
        raise InputDataError(f"input file '{path}' cannot be read as an image (corrupt or unsupported): {e}.") from e


def _spatial_shape(path: str, shape: tuple[int, ...], spatial_dims: int) -> tuple[int, ...]:
    squeezed = tuple(shape)
    while len(squeezed) > spatial_dims and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    if len(squeezed) < spatial_dims or (len(squeezed) == spatial_dims and min(squeezed) == 1 and spatial_dims == 3):
        raise InputDataError(
            f"input file '{path}' has shape {shape}: a {len([s for s in shape if s > 1])}D image, "
            f"but this bundle needs {spatial_dims}D single-channel volumes."
        )
    if len(squeezed) > spatial_dims:
        raise InputDataError(
            f"input file '{path}' has shape {shape}: {int(np.prod(squeezed[spatial_dims:]))} channels, "
            f"but this bundle needs one channel per modality file ({spatial_dims}D, single channel)."
        )
    return squeezed


def check_cases(
    cases: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    reference_key: str | None = None,
    spatial_dims: int = 3,
    atol: float = 1e-3,
    check_finite: bool = True,
    optional_keys: Sequence[str] = (),
) -> int:
    """Check every case of a datalist before it is used.

    Args:
        cases: datalist entries (``{key: path}``), paths already resolved.
        keys: the keys each case must have (modalities the bundle reads).
        reference_key: the key whose grid the others must match (default: the first of ``keys``).
        spatial_dims: spatial dimensions each image must have (3 for volumes).
        atol: absolute tolerance on the affine entries (mm).
        check_finite: load the voxels and refuse NaN/Inf (slower: reads every image).
        optional_keys: keys checked for geometry when present (e.g. masks), not required.

    Returns:
        the number of cases checked.

    Raises:
        InputDataError: on the first problem, naming the case, key or file and what was expected.
    """
    if not keys:
        raise ValueError("keys must name at least one image key.")
    reference_key = reference_key or keys[0]
    if reference_key not in keys:
        raise ValueError(f"reference_key {reference_key!r} must be one of keys {list(keys)}.")
    for i, case in enumerate(cases):
        name = case.get("subject", f"case {i}")
        missing = [k for k in keys if k not in case]
        if missing:
            raise InputDataError(
                f"case '{name}' has no {missing} key(s); the bundle reads {list(keys)} (available: {sorted(case)})."
            )
        ref = None
        ordered = [reference_key] + [k for k in keys if k != reference_key]
        for key in ordered + [k for k in optional_keys if k in case and k not in ordered]:
            path = str(case[key])
            shape, affine, data = read_image(path, load_data=check_finite)
            spatial = _spatial_shape(path, shape, spatial_dims)
            if data is not None and not np.isfinite(data).all():
                bad = int((~np.isfinite(data)).sum())
                raise InputDataError(f"input file '{path}' (key '{key}') has {bad} NaN/Inf voxels; expected finite values.")
            if ref is None:
                ref = (key, path, spatial, affine)
                continue
            r_key, r_path, r_spatial, r_affine = ref
            if spatial != r_spatial:
                raise InputDataError(
                    f"'{path}' (key '{key}') has shape {spatial} but '{r_path}' (key '{r_key}') has {r_spatial}; "
                    "paired images must share one grid."
                )
            if not np.allclose(affine, r_affine, atol=atol, rtol=0):
                diff = float(np.abs(affine - r_affine).max())
                raise InputDataError(
                    f"'{path}' (key '{key}') has an affine that differs from '{r_path}' (key '{r_key}') by up to "
                    f"{diff:.4g} mm (tolerance {atol}); paired images must be co-registered on one grid."
                )
    return len(cases)


def check_output_dir(path: str) -> str:
    """Create ``path`` if needed and make sure files can be written there.

    Raises:
        InputDataError: naming the folder, when it cannot be created or written.
    """
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as e:
        raise InputDataError(f"output folder '{path}' is not writable: {e.strerror or e}.") from e
    return path
