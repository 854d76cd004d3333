"""``serving/monailabel/lib/bundle.py`` (no MONAI Label needed, so this runs in ``.venv`` and CI): what a served
bundle declares (type, dimension, inputs), how a request's modalities are found, and the one-case datalist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from lib.bundle import SynthesisBundle, bundle_folders, sibling_name, sibling_path, split_extension, write_image
from make_studies import make_studies
from serving_support import BUNDLE_NAMES, REPO, spec_for, test_cases

from monai.data import MetaTensor

# what each bundle's metadata and inference config give (a bundle added later must be added here)
EXPECTED = {
    "amcgan_contrast_mri": (["t1"], "t1", 3),  # 2D network, SliceInferer: serves volumes
    "context_gan_synthesis": (["t1ce"], "t1ce", 3),
    "dual_discriminator_synthesis": (["t1"], "t1", 3),
    "fagan_super_resolution": (["t1"], "t1", 3),
    "hrfcn_contrast_t1": (["t1", "t2", "adc", "brain_mask"], "t1", 3),
}


def test_every_bundle_is_listed():
    assert sorted(EXPECTED) == BUNDLE_NAMES
    assert [p.name for p in bundle_folders(REPO / "bundles")] == BUNDLE_NAMES
    assert bundle_folders(REPO / "bundles" / "hrfcn_contrast_t1") == [REPO / "bundles" / "hrfcn_contrast_t1"]


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_bundle_declares_inputs_and_dimension(name):
    bundle = SynthesisBundle(REPO / "bundles" / name)
    keys, primary, dimension = EXPECTED[name]
    assert bundle.input_keys == keys
    assert bundle.primary_key == primary
    assert bundle.dimension == dimension
    assert bundle.network_dims == (2 if name in ("amcgan_contrast_mri", "fagan_super_resolution") else 3)
    assert bundle.description.startswith(bundle.metadata["task"])
    assert bundle.ckpt_path == str(REPO / "bundles" / name / "models" / "model.pt")  # bundle_root = the folder
    assert not any(type(t).__name__ == "SaveImaged" for t in bundle.postprocessing.transforms)


def test_refuses_a_non_image_output(tmp_path):
    folder = tmp_path / "seg_bundle"
    shutil.copytree(REPO / "bundles" / "dual_discriminator_synthesis" / "configs", folder / "configs")
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["type"] = "label"
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not 'image'"):
        SynthesisBundle(folder)
    with pytest.raises(ValueError, match="missing config"):
        SynthesisBundle(REPO / "bundles" / "hrfcn_contrast_t1", ["no_such.json"])


def test_sibling_names():
    assert sibling_name("phantom_001_t1", "t1", "brain_mask") == "phantom_001_brain_mask"
    assert sibling_name("t1", "t1", "adc") == "adc"
    assert sibling_name("phantom_001_t1ce", "t1", "t2") is None
    assert sibling_path("/d/case_7_t1.nii.gz", "t1", "t2") == "/d/case_7_t2.nii.gz"
    assert sibling_path("/d/p1/t1.nrrd", "t1", "adc") == "/d/p1/adc.nrrd"
    assert split_extension("a/b.seg.nrrd") == ("a/b", ".seg.nrrd")


def test_request_modalities_and_case(tiny_phantom, tmp_path):
    """HR-FCN: t2/adc/brain_mask from beside the t1, a named t2 wins; the case is the bundle's own entry."""
    bundle = SynthesisBundle(REPO / "bundles" / "hrfcn_contrast_t1", overrides={"ckpt_dir": str(tmp_path)})
    case = test_cases(tiny_phantom)[0]
    inputs = bundle.inputs_from_request({"image": case["t1"]})
    assert inputs == {k: case[k] for k in ("t1", "t2", "adc", "brain_mask")}
    assert bundle.inputs_from_request({"image": case["t1"], "t2": case["flair"]})["t2"] == case["flair"]
    torch.save({"model": {}}, tmp_path / "model.pt")
    entry = bundle.case(inputs)
    assert {k: entry[k] for k in inputs} == inputs and entry["subject"]  # the bundle's case naming ran
    with pytest.raises(Exception, match="brain_mask"):  # the bundle's own input check names the missing key
        bundle.case({k: v for k, v in inputs.items() if k != "brain_mask"})


def test_write_image_keeps_the_geometry(tmp_path):
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    affine[:3, 3] = [3.0, -4.0, 5.0]
    data = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4) / 7
    path = write_image(MetaTensor(data, affine=torch.as_tensor(affine)), str(tmp_path / "out.nii.gz"))
    img = nib.load(path)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data[0].numpy())
    with pytest.raises(ValueError, match="MetaTensor"):
        write_image(data, str(tmp_path / "x.nii.gz"))


def test_spec_for_unregistered_bundle_runs_as_is():
    assert spec_for("no_such_bundle").tiny == {}


def test_make_studies_lays_out_a_flat_datastore(tiny_phantom, tmp_path):
    written = make_studies(str(Path(tiny_phantom) / "datalist.json"), "test", ["t1", "brain_mask"], str(tmp_path))
    case = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    assert len(written) == 4 and all(p.is_symlink() for p in written)
    linked = (tmp_path / f"{case['subject']}_brain_mask.nii.gz").resolve()
    assert linked == (Path(tiny_phantom) / case["brain_mask"]).resolve()
    with pytest.raises(ValueError, match="'flair2'"):
        make_studies(str(Path(tiny_phantom) / "datalist.json"), "test", ["flair2"], str(tmp_path))
