"""Data: datalists, input validation, dataset preparation for BraTS / IXI / SynthRAD, the demo phantom."""

from __future__ import annotations

from .datalist import SPLITS, split_subjects, write_datalist
from .naming import assign_case_names, case_stem
from .patches import PatchWeightMapd, RandContextPatchd, gradient_magnitude, window_mean
from .phantom import generate_dataset, generate_subject, write_subject
from .phantom_anatomy import MASK_KEYS, TISSUE_LABELS, TUMOR_LABELS
from .phantom_physics import IMAGE_KEYS
from .prepare import BRATS_KEYS, IXI_KEYS, SYNTHRAD_KEYS, prepare_brats, prepare_ixi, prepare_synthrad
from .prepare_core import PrepareReport
from .repeat import repeat_dataset
from .sampling import SliceWeightMapd, slice_lesion_indicator
from .validation import InputDataError, check_cases, check_checkpoint, check_output_dir, load_datalist, read_image

__all__ = [
    "SPLITS",
    "split_subjects",
    "write_datalist",
    "IMAGE_KEYS",
    "MASK_KEYS",
    "TISSUE_LABELS",
    "TUMOR_LABELS",
    "generate_dataset",
    "generate_subject",
    "write_subject",
    "BRATS_KEYS",
    "IXI_KEYS",
    "SYNTHRAD_KEYS",
    "PrepareReport",
    "prepare_brats",
    "prepare_ixi",
    "prepare_synthrad",
    "SliceWeightMapd",
    "slice_lesion_indicator",
    "InputDataError",
    "check_cases",
    "check_checkpoint",
    "check_output_dir",
    "load_datalist",
    "read_image",
    "assign_case_names",
    "case_stem",
    "repeat_dataset",
    "PatchWeightMapd",
    "RandContextPatchd",
    "gradient_magnitude",
    "window_mean",
]
