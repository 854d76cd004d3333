"""Fail-fast checks of a bundle's inputs, run before anything is trained or written.

Every bad input of the bundle contract (section 6) stops here with one :class:`InputDataError` naming the
file or key and what was expected: a missing datalist or file, a missing modality key, a corrupt file,
NaN/Inf voxels, the wrong number of channels or dimensions, paired images that disagree in shape or
affine, an unwritable output folder, a checkpoint that is not one.

NIfTI files are read with nibabel only (a truncated ``.nii.gz`` raises there, where MONAI's ``LoadImage`` would
fall back to ITK, whose reader aborts the whole process); other formats with ITK.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

from common.utils.errors import UserError
from common.utils.extensions import IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputDataError",
    "load_datalist",
    "check_cases",
    "check_checkpoint",
    "check_output_dir",
    "read_image",
]

DEMO_HINT = (
    "generate the demo data with `python scripts/make_demo_data.py --output_dir data/demo`, "
    "or pass --dataset_dir DIR (a folder holding datalist.json) or --datalist FILE"
)

NIFTI_EXTENSIONS = (".nii", ".nii.gz")


class InputDataError(ValueError, UserError):
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

    NIfTI is read with nibabel: its header only when ``load_data`` is False, every voxel otherwise (a truncated
    gzip stream fails there). Other formats are read with MONAI's ``ITKReader``, array axes in MONAI's
    ``(x, y, z)`` order. Affines are RAS.

    Raises:
        InputDataError: the file is missing or cannot be read.
    """
    if not os.path.exists(path):
        raise InputDataError(f"input file '{path}' does not exist.")
    try:
        if str(path).lower().endswith(NIFTI_EXTENSIONS):
            import nibabel as nib

            img = nib.load(path)
            shape, affine = tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)
            data = np.asanyarray(img.dataobj) if load_data else None
            if data is not None and data.shape != shape:
                raise OSError(f"read {data.shape} voxels, header says {shape}")
            return shape, affine, data
        img = LoadImage(reader="ITKReader", image_only=True)(path)
        data = np.asarray(img)
        return tuple(data.shape), np.asarray(img.affine, dtype=np.float64), data
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        reason = reason.rstrip(". ") if len(reason) <= 200 else reason[:200] + "..."
        raise InputDataError(
            f"input file '{path}' cannot be read as an image (corrupt, truncated or unsupported): {reason}."
        ) from e


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


def _summarise(path: str, key: str, load_data: bool) -> tuple[tuple[int, ...], np.ndarray, bool | None]:
    """``(shape, affine, is_constant-or-None)`` of one file; refuses NaN/Inf voxels when the data is read."""
    shape, affine, data = read_image(path, load_data=load_data)
    if data is None:
        return shape, affine, None
    if np.issubdtype(data.dtype, np.inexact):
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise InputDataError(f"input file '{path}' (key '{key}') has {bad} NaN/Inf voxels; expected finite values.")
    constant = bool(data.size == 0 or np.min(data) == np.max(data))
    return shape, affine, constant


def check_cases(
    cases: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    reference_key: str | None = None,
    spatial_dims: int = 3,
    atol: float = 1e-3,
    check_finite: bool = True,
    optional_keys: Sequence[str] = (),
    mask_keys: Sequence[str] = (),
) -> int:
    """Check every case of a datalist before it is used.

    With ``check_finite`` every voxel of every file is read once (a file shared by several cases, once in all):
    a corrupt or truncated file and NaN/Inf voxels are refused here instead of mid-training, and a constant
    (e.g. all-zero) source or target image is reported with a warning naming the case, key and file (it can be
    legitimate, but usually means a broken conversion). Masks (``mask_keys`` and ``optional_keys``) may be empty.

    Args:
        cases: datalist entries (``{key: path}``), paths already resolved.
        keys: the keys each case must have (modalities the bundle reads).
        reference_key: the key whose grid the others must match (default: the first of ``keys``).
        spatial_dims: spatial dimensions each image must have (3 for volumes).
        atol: absolute tolerance on the affine entries (mm).
        check_finite: read the voxels, refuse NaN/Inf and unreadable data, warn on constant images. False reads
            headers only (NIfTI), for a quick geometry check.
        optional_keys: keys checked for geometry when present (e.g. masks), not required.
        mask_keys: keys (required or optional) exempt from the constant-image warning.

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
    exempt = set(mask_keys) | set(optional_keys)
    seen: dict[str, tuple[tuple[int, ...], np.ndarray, bool | None]] = {}
    ordered = [reference_key] + [k for k in keys if k != reference_key]
    for i, case in enumerate(cases):
        name = case.get("subject", f"case {i}")
        missing = [k for k in keys if k not in case]
        if missing:
            raise InputDataError(
                f"case '{name}' has no {missing} key(s); the bundle reads {list(keys)} (available: {sorted(case)})."
            )
        ref = None
        for key in ordered + [k for k in optional_keys if k in case and k not in ordered]:
            path = str(case[key])
            if path not in seen:
                seen[path] = _summarise(path, key, load_data=check_finite)
            shape, affine, constant = seen[path]
            spatial = _spatial_shape(path, shape, spatial_dims)
            if constant and key not in exempt:
                message = (
                    f"case '{name}': input file '{path}' (key '{key}') is constant (every voxel has one value); "
                    "check its conversion."
                )
                warnings.warn(message, stacklevel=2)
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


_CKPT_HINT = "train the bundle first or point --ckpt_path at a model.pt written by it"


def _load_failure(e: BaseException) -> str:
    """A short reason for a failed ``torch.load``, without torch's advice (never to disable ``weights_only``)."""
    text = str(e)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a pickled Python object ({unsupported.group(1)}), not only tensors and containers"
    if "Weights only load failed" in text or "invalid load key" in text or "magic number" in text.lower():
        return "it is not a PyTorch checkpoint (unreadable content)"
    if "zip archive" in text or "central directory" in text or isinstance(e, EOFError):
        return "the file is truncated or corrupt"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    return first if "weights_only" not in first else "it cannot be loaded with torch.load"


def _first_bad_tensor(obj: Any, prefix: str = "") -> tuple[str, int] | None:
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            bad = int((~torch.isfinite(obj)).sum())
            return (prefix or "<tensor>", bad) if bad else None
        return None
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _first_bad_tensor(v, f"{prefix}.{k}" if prefix else str(k))
        if found:
            return found
    return None


def check_checkpoint(path: str, required_keys: Sequence[str] = ()) -> None:
    """Check that ``path`` is a checkpoint the bundle can load, before anything is run or written.

    The file must exist, load with ``torch.load(path, map_location="cpu", weights_only=True)`` into a dict (a
    state dict, or a dict of state dicts holding ``required_keys``), and hold finite tensors only.

    Args:
        path: the checkpoint file (a bundle's ``model.pt``).
        required_keys: entries the dict must hold, each a state dict (e.g. ``["model"]`` for a full training
            checkpoint; empty for ``model.pt``, which holds the generator's state dict itself).

    Raises:
        InputDataError: "checkpoint '<path>' is not a valid checkpoint: <short reason>; train the bundle first or
            point --ckpt_path at a model.pt written by it".
    """
    import torch

    def refuse(reason: str) -> InputDataError:
        return InputDataError(f"checkpoint '{path}' is not a valid checkpoint: {reason}; {_CKPT_HINT}.")

    if not os.path.isfile(path):
        raise refuse("the file does not exist" if not os.path.exists(path) else "it is not a file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise refuse(_load_failure(e)) from None
    if not isinstance(content, Mapping):
        raise refuse(f"it holds a {type(content).__name__}, expected a dict of tensors (a state dict)")
    if not content:
        raise refuse("it holds an empty dict")
    missing = [k for k in required_keys if k not in content]
    if missing:
        raise refuse(f"it has no {missing} entries (it holds {sorted(map(str, content))[:10]})")
    not_dicts = [k for k in required_keys if not isinstance(content[k], Mapping)]
    if not_dicts:
        raise refuse(f"its {not_dicts} entries are not state dicts")
    bad = _first_bad_tensor(content)
    if bad:
        raise refuse(f"tensor '{bad[0]}' has {bad[1]} NaN/Inf values")


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
