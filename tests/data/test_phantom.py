"""Tests of the physics-based brain phantom (common.data.phantom) and scripts/make_demo_data.py."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.phantom import generate_dataset, generate_subject, subject_seed, write_subject
from common.data.phantom_anatomy import MASK_KEYS, TISSUE_LABELS
from common.data.phantom_physics import DEFAULT_SEQUENCES, IMAGE_KEYS, TISSUE_PARAMETERS, MRSequences

CODE = {name: code for code, name in TISSUE_LABELS.items()}
CSF, GM, WM, DEEP_GM, VESSEL, BONE = (
    CODE[n] for n in ("csf", "grey_matter", "white_matter", "deep_grey_matter", "vessel", "bone")
)
NECROSIS, EDEMA, ENHANCING = CODE["necrotic_core"], CODE["edema"], CODE["enhancing_tumor"]

SHAPE, SPACING = (48, 56, 48), (2.0, 2.0, 2.0)
SMALL, SMALL_SPACING = (32, 40, 32), (3.0, 3.0, 3.0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clean():
    """Noise-free subject with two tumours (bias field, gains and parameter jitter on)."""
    return generate_subject(SHAPE, SPACING, seed=3, num_tumors=2, noise_level=0.0, ct_noise_hu=0.0)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two data sets with the same seed (in-process and with 2 worker processes) and one with another seed."""
    root = tmp_path_factory.mktemp("phantom")
    return {
        name: generate_dataset(root / name, 3, SMALL, SMALL_SPACING, seed, num_workers=workers)
        for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1))
    }


def _mean(subject, key, code):
    return float(subject.volumes[key][subject.volumes["labels"] == code].mean())


def test_signal_equations_known_values():
    seq = DEFAULT_SEQUENCES
    e1 = math.exp(-20.0 / 830.0)
    expected = 0.69 * math.sin(math.radians(20)) * (1 - e1) / (1 - math.cos(math.radians(20)) * e1) * math.exp(-4 / 50)
    assert seq.t1w(0.69, 830.0, 50.0) == pytest.approx(expected, rel=1e-12)
    assert seq.t2w(1.0, 4000.0, 2000.0) == pytest.approx((1 - math.exp(-5000 / 4000)) * math.exp(-100 / 2000))
    null_ti = 4000.0 * math.log(2 / (1 + math.exp(-9000.0 / 4000.0)))  # inversion time nulling CSF
    assert MRSequences(flair_ti=null_ti).flair(1.0, 4000.0, 2000.0) == pytest.approx(0.0, abs=1e-12)
    assert seq.flair(1.0, 4000.0, 2000.0) < 0.005 * seq.flair(0.69, 830.0, 80.0)  # the default TI nearly does
    csf, gm, wm = (TISSUE_PARAMETERS[c] for c in (CSF, GM, WM))
    assert seq.t1w(wm.pd, wm.t1, wm.t2s) > seq.t1w(gm.pd, gm.t1, gm.t2s) > seq.t1w(csf.pd, csf.t1, csf.t2s)


def test_t1_white_brighter_than_grey(clean):
    assert _mean(clean, "t1", WM) > _mean(clean, "t1", GM) > _mean(clean, "t1", CSF)


def test_csf_brightest_in_t2_darkest_in_flair(clean):
    t2 = [_mean(clean, "t2", c) for c in (CSF, GM, WM)]
    flair = [_mean(clean, "flair", c) for c in (CSF, GM, WM)]
    assert t2[0] > t2[1] > t2[2]
    assert flair[0] < 0.3 * min(flair[1:])


def test_contrast_enhancement_only_where_gadolinium(clean):
    t1, t1ce, gd, labels = (clean.volumes["t1"], clean.volumes["t1ce"], clean.gd_concentration, clean.volumes["labels"])
    enhancing = labels == ENHANCING
    assert enhancing.sum() > 10
    assert np.all(t1ce[enhancing] > 1.2 * t1[enhancing])
    assert np.all(gd[enhancing] > 0)
    assert np.array_equal(t1ce[gd == 0], t1[gd == 0])  # same bias, gain and noise-free: bit-identical
    assert np.all(t1ce[gd > 0] > t1[gd > 0])
    assert np.array_equal(gd > 0, clean.fractions[ENHANCING] + clean.fractions[VESSEL] > 0)  # where agent accumulates


def test_ct_and_adc_values(clean):
    assert _mean(clean, "ct", BONE) > 700
    for code in (GM, WM, DEEP_GM):
        assert 20 <= _mean(clean, "ct", code) <= 50
    assert np.all(clean.volumes["ct"][clean.fractions[0] == 1] == -1000.0)  # air, no CT noise
    pure_csf = clean.fractions[CSF] > 0.99
    assert pure_csf.sum() > 20
    assert np.median(clean.volumes["adc"][pure_csf]) == pytest.approx(3.0e-3, rel=0.1)
    assert _mean(clean, "adc", WM) == pytest.approx(0.75e-3, rel=0.15)


def test_masks_and_labels(clean):
    v = clean.volumes
    assert set(np.unique(v["tumor_mask"])) == {0, 1, 2, 3}
    assert np.all(v["brain_mask"][v["tumor_mask"] > 0] == 1)  # tumours inside the brain
    for tumour_label, code in ((1, NECROSIS), (2, EDEMA), (3, ENHANCING)):
        assert np.array_equal(v["tumor_mask"] == tumour_label, v["labels"] == code)
    assert np.all(v["brain_mask"][v["labels"] == WM] == 1) and not np.any(v["brain_mask"][v["labels"] == BONE])
    assert np.allclose(clean.fractions.sum(0), 1.0, atol=1e-5) and clean.fractions.min() >= 0
    assert v["labels"].max() <= ENHANCING
    no_tumour = generate_subject(SMALL, SMALL_SPACING, seed=1, num_tumors=0)
    assert not no_tumour.volumes["tumor_mask"].any()


def test_known_answer_without_randomness():
    kwargs = dict(
        noise_level=0.0,
        ct_noise_hu=0.0,
        bias_strength=0.0,
        intensity_jitter=0.0,
        param_jitter=0.0,
        texture_strength=0.0,
        num_tumors=0,
    )
    subject = generate_subject(SHAPE, SPACING, seed=2, **kwargs)
    pure_wm, pure_csf = subject.fractions[WM] == 1, subject.fractions[CSF] == 1
    assert pure_wm.sum() > 100 and pure_csf.sum() > 10
    seq, wm, csf = DEFAULT_SEQUENCES, TISSUE_PARAMETERS[WM], TISSUE_PARAMETERS[CSF]
    for key in ("t1", "t2", "flair"):  # each series' gain puts white matter at 1000
        np.testing.assert_allclose(subject.volumes[key][pure_wm], 1000.0, rtol=1e-5)
    np.testing.assert_allclose(
        subject.volumes["t2"][pure_csf],
        1000.0 * seq.t2w(csf.pd, csf.t1, csf.t2) / seq.t2w(wm.pd, wm.t1, wm.t2),
        rtol=1e-5,
    )
    np.testing.assert_allclose(subject.volumes["ct"][pure_wm], wm.ct, atol=1e-3)


def test_noise_and_misregistration_knobs(clean):
    noisy = generate_subject(SHAPE, SPACING, seed=3, num_tumors=2)
    moved = generate_subject(
        SHAPE,
        SPACING,
        seed=3,
        num_tumors=2,
        noise_level=0.0,
        ct_noise_hu=0.0,
        misregistration_mm=2.0,
        misregistration_deg=3.0,
    )
    background = clean.fractions[0] == 1  # pure air
    assert np.all(clean.volumes["t1"][background] == 0)  # noise off: black air
    assert 20 < noisy.volumes["t1"][background].mean() < 60  # Rician floor ~ 1.25 x 3 % of white matter
    assert np.array_equal(noisy.volumes["labels"], clean.volumes["labels"])  # noise does not change anatomy
    assert np.array_equal(moved.volumes["t1"], clean.volumes["t1"])  # t1 is the reference
    assert np.abs(moved.volumes["t2"] - clean.volumes["t2"]).mean() > 10


def test_invalid_arguments(tmp_path):
    for kwargs, name in (
        ({"shape": (0, 56, 48)}, "shape"),
        ({"shape": (48, 56)}, "shape"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"num_tumors": (3, 1)}, "num_tumors"),
        ({"noise_level": -0.1}, "noise_level"),
    ):
        with pytest.raises(ValueError, match=name):
            generate_subject(**kwargs)
    with pytest.raises(ValueError, match="num_subjects"):
        generate_dataset(tmp_path, num_subjects=0, shape=SMALL)


def test_written_files_geometry_and_types(clean, tmp_path):
    paths = write_subject(clean, tmp_path / "s")
    assert set(paths) == set(IMAGE_KEYS) | set(MASK_KEYS)
    for key, path in paths.items():
        img = nib.load(path)
        assert img.shape == SHAPE
        np.testing.assert_allclose(np.diag(img.affine)[:3], SPACING)
        np.testing.assert_allclose(img.affine[:3, 3], -(np.array(SHAPE) - 1) / 2 * np.array(SPACING))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert img.get_data_dtype() == (np.uint8 if key in MASK_KEYS else np.float32)
        assert np.array_equal(np.asanyarray(img.dataobj), clean.volumes[key])


def test_datalist_splits_and_paths(datasets):
    path = datasets["a"]
    data = json.loads(path.read_text())
    subjects = [row["subject"] for split in ("training", "validation", "test") for row in data[split]]
    assert all(data[split] for split in ("training", "validation", "test"))
    assert [data[f"num{s.capitalize()}"] for s in ("training", "validation", "test")] == [1, 1, 1]
    assert sorted(subjects) == ["phantom_000", "phantom_001", "phantom_002"]
    for split in ("training", "validation", "test"):
        for row in data[split]:
            assert set(row) == {"subject", *IMAGE_KEYS, *MASK_KEYS}
            for key in (*IMAGE_KEYS, *MASK_KEYS):
                assert not Path(row[key]).is_absolute() and (path.parent / row[key]).is_file()
    assert nib.load(path.parent / "phantom_000" / "t1.nii.gz").shape == SMALL


def test_determinism_and_seeds(datasets):
    a, b, c = (datasets[k].parent for k in "abc")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * 9
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "phantom_000" / "t1.nii.gz").read_bytes() != (c / "phantom_000" / "t1.nii.gz").read_bytes()
    t1 = [nib.load(a / f"phantom_00{i}" / "t1.nii.gz").get_fdata() for i in range(3)]
    assert not np.array_equal(t1[0], t1[1]) and not np.array_equal(t1[1], t1[2])
    assert len({subject_seed(5, i) for i in range(3)} | {subject_seed(6, 0)}) == 4


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_what_it_says(tmp_path, capsys):
    script = _load_script()
    out = tmp_path / "demo"
    returned = script.main(output_dir=str(out), num_subjects=3, shape=[32, 40, 32], spacing=[3, 3, 3], seed=1)
    line = capsys.readouterr().out.strip()
    match = re.fullmatch(
        r"(\d+) phantom subjects \((\d+) training / (\d+) validation / (\d+) test\) "
        r"written in [\d.]+ s; datalist: (.+)",
        line,
    )
    assert match and match.group(5) == str(returned) == str(out.absolute() / "datalist.json")
    data = json.loads(returned.read_text())
    assert [int(g) for g in match.groups()[:4]] == [
        3,
        len(data["training"]),
        len(data["validation"]),
        len(data["test"]),
    ]
    assert sorted(p.name for p in out.iterdir()) == ["datalist.json", "phantom_000", "phantom_001", "phantom_002"]
    assert nib.load(out / "phantom_002" / "ct.nii.gz").header.get_zooms() == (3.0, 3.0, 3.0)
    assert script.cli(["--output_dir", str(tmp_path / "bad"), "--shape", "[0,40,32]"]) == 2
    assert script.cli(["--output_dir", str(tmp_path / "bad"), "--spacing", "[1,1]"]) == 2
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="num_subjects"):
        script.main(output_dir=str(tmp_path / "bad"), num_subjects=0)


def test_tumour_radius_knob():
    """``tumor_radius_range``: the default is today's phantom (same bytes), larger radii give larger rims."""
    kwargs = dict(num_tumors=1, noise_level=0.0, ct_noise_hu=0.0)
    default = generate_subject(SHAPE, SPACING, seed=3, **kwargs)
    explicit = generate_subject(SHAPE, SPACING, seed=3, tumor_radius_range=(0.15, 0.28), **kwargs)
    assert all(np.array_equal(default.volumes[k], explicit.volumes[k]) for k in default.volumes)
    small = generate_subject(SHAPE, SPACING, seed=3, tumor_radius_range=(0.15, 0.15), **kwargs)
    large = generate_subject(SHAPE, SPACING, seed=3, tumor_radius_range=(0.3, 0.3), **kwargs)
    (t_small,), (t_large,) = small.info["tumours"], large.info["tumours"]
    a_small, a_large = (t["necrotic_enhancing_edema_radii_mm"][1] for t in (t_small, t_large))
    assert a_large == pytest.approx(2 * a_small, rel=1e-6)  # the same draw, scaled by the range
    rim = [int((s.volumes["tumor_mask"] == 3).sum()) for s in (small, large)]
    assert rim[1] > 2 * rim[0] > 0
    for bad in ((0.0, 0.2), (0.3, 0.2), (0.2, 0.7), (0.2,)):
        with pytest.raises(ValueError, match="tumor_radius_range"):
            generate_subject(SMALL, SMALL_SPACING, tumor_radius_range=bad)


def test_generate_dataset_passes_the_tumour_knob(tmp_path):
    paths = [
        generate_dataset(tmp_path / n, num_subjects=1, shape=SMALL, spacing=SMALL_SPACING, seed=4, num_tumors=1, **kw)
        for n, kw in (("default", {}), ("large", {"tumor_radius_range": (0.35, 0.35)}))
    ]
    rims = []
    for path in paths:
        case = json.loads(path.read_text())["training"] or json.loads(path.read_text())["test"]
        rims.append(int((np.asarray(nib.load(path.parent / case[0]["tumor_mask"]).dataobj) == 3).sum()))
    assert rims[1] > rims[0]
