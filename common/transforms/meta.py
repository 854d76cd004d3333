"""Case naming, so inference writes ``<output_dir>/<case>/<case>_<suffix>.nii.gz``.

Data sets such as the demo phantom or BraTS 2023 keep one folder per subject with modality-named files
(``subject_003/t1.nii.gz``); naming outputs after the file stem would make every case ``t1``. The names follow
:func:`common.data.naming.assign_case_names`: the datalist's ``subject`` field when present, else the source
file name without extension. Bundles call ``assign_case_names`` on the whole datalist in ``initialize`` so that
every entry holds a unique ``subject`` before these transforms see it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.data.naming import assign_case_names, case_stem

__all__ = ["SetCaseNamed", "case_name_formatter", "CASE_NAME"]

CASE_NAME = "case_name"


class SetCaseNamed(MapTransform):
    """Store the case name in the metadata of ``keys`` (under ``"case_name"``).

    Args:
        keys: MetaTensors whose meta receives the name (e.g. the image that inference saves from).
        name_key: datalist field holding the case name (``"subject"``, its last path component); when absent the
            name is the stem of the key's source file, as :func:`~common.data.naming.assign_case_names` names a
            single entry.
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
            entry = {self.name_key: name} if name else {"_source_file": img.meta.get("filename_or_obj") or "case"}
            img.meta[CASE_NAME] = assign_case_names([entry], "_source_file", self.name_key)[0][self.name_key]
        return d


def case_name_formatter(metadict: dict | None, saver: Any = None) -> dict:
    """``SaveImage(d)`` name formatter: ``{"subject": case_name}`` (falls back to the file stem)."""
    metadict = metadict or {}
    case = metadict.get(CASE_NAME) or case_stem(metadict.get("filename_or_obj") or "case")
    return {"subject": str(case), "idx": None}
