from __future__ import annotations

import pytest

from common.utils.extensions import IMAGE_EXTENSIONS, strip_image_extension


@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS)
def test_every_extension_is_stripped(ext):
    assert strip_image_extension(f"/data/case1/t1{ext}") == "/data/case1/t1"
    assert strip_image_extension(f"t1{ext.upper()}") == "t1"


def test_union_of_former_copies():
    former = {".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".png", ".tif", ".npy", ".npz", ".gz"}
    assert former <= set(IMAGE_EXTENSIONS)


def test_compound_before_tail():
    assert IMAGE_EXTENSIONS.index(".nii.gz") < IMAGE_EXTENSIONS.index(".gz")
    assert IMAGE_EXTENSIONS.index(".nii.gz") < IMAGE_EXTENSIONS.index(".nii")
    assert IMAGE_EXTENSIONS.index(".tiff") < IMAGE_EXTENSIONS.index(".tif")
    assert strip_image_extension("a/sub-01_T1w.nii.gz") == "a/sub-01_T1w"
    assert strip_image_extension("a/vol.Nii.Gz") == "a/vol"
    assert strip_image_extension("a/vol.mha.gz") == "a/vol.mha"


@pytest.mark.parametrize("path", ["notes.txt", "a/b.json", "archive", "dir/.nii", ".gz"])
def test_other_paths_unchanged(path):
    assert strip_image_extension(path) == path


def test_used_by_the_three_former_copies():
    from common.data import validation
    from common.handlers import cases

    assert validation.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert cases._SUFFIXES is IMAGE_EXTENSIONS
