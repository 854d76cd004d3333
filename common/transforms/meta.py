"""Case naming, so inference writes ``<output_dir>/<case>/<case>_<suffix>.nii.gz``.

Data sets such as the demo phantom or BraTS 2023 keep one folder per subject with modality-named files
(``subject_003/t1.nii.gz``); naming outputs after the file stem would make every case ``t1``. The case name
is the datalist's ``subject`` field when present, else the source file name without extension.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["SetCaseNamed", "case_name_formatter", "CASE_NAME"]

CASE_NAME = "case_name"


def _stem(path: str) -> str:
    name = os.path.basename(str(path))
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".png", ".tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


class SetCaseNamed(MapTransform):
    """Store the case name in the metadata of ``keys`` (under ``"case_name"``).

    Args:
        keys: MetaTensors whose meta receives the name (e.g. the image that inference saves from).
        name_key: datalist field holding the case name (``"subject"``); when absent the name is the stem of
            the first key's source file.
    """

    def __init__(self, keys: KeysCollection, name_key: str = "subject", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.name_key = name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = d.get(self.name_key)
        for key in self.key_iterator(d):
            img = d[key]
            if not isinstance(img, MetaTensor):
                continue
            # MONAI's datalist loader turns a name that is also a folder of the dataset into a path
            case = os.path.basename(os.path.normpath(str(name))) if name else _stem(img.meta.get("filename_or_obj", "case"))
            img.meta[CASE_NAME] = case
        return d


def case_name_formatter(metadict: dict | None, saver: Any = None) -> dict:
    """``SaveImage(d)`` name formatter: ``{"subject": case_name}`` (falls back to the file stem)."""
    metadict = metadict or {}
    case = metadict.get(CASE_NAME) or _stem(metadict.get("filename_or_obj", "case"))
    return {"subject": str(case), "idx": None}
