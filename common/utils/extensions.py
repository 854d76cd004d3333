"""The image file extensions the collection reads, in one place.

Used to turn a file path into a case name (``case1/t1.nii.gz`` -> ``t1``), to recognise image paths in a
datalist and to name evaluation rows. Compound extensions come before their tails (``.nii.gz`` before
``.nii`` and ``.gz``) so that the longest match wins; matching ignores case.
"""

from __future__ import annotations

import os

__all__ = ["IMAGE_EXTENSIONS", "strip_image_extension"]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".dcm",
    ".png",
    ".tiff",
    ".tif",
    ".npy",
    ".npz",
    ".gz",
)


def strip_image_extension(path: str | os.PathLike) -> str:
    """``path`` without its image extension (folders kept); unchanged when it has none of ``IMAGE_EXTENSIONS``.

    Examples: ``"/d/case1/T1.NII.GZ"`` -> ``"/d/case1/T1"``, ``"vol.mha"`` -> ``"vol"``, ``"notes.txt"`` ->
    ``"notes.txt"``.
    """
    path = os.fspath(path)
    lower = path.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(path) > len(ext) and path[-len(ext) - 1] not in "/\\":
            return path[: -len(ext)]
    return path
