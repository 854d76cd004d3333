"""Tests of common.data.prepare and the scripts/prepare_*.py command-line tools on tiny fake trees."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
import pytest

from common.data.datalist import SPLITS
from common.data.prepare import BRATS_KEYS, IXI_KEYS, SYNTHRAD_KEYS, prepare_brats, prepare_ixi, prepare_synthrad

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SHIFTED = np.diag([1.0, 1.0, 1.0, 1.0])
SHIFTED[0, 3] = 2.0  # 2 mm translation: far beyond the default 1e-3 tolerance
BRATS_NAMES = {  # release -> (subject id pattern, separator, suffix of t1, t1ce, t2, flair, tumor_mask)
    "2021": ("BraTS2021_{:05d}", "_", ("t1", "t1ce", "t2", "flair", "seg")),
    "2023": ("BraTS-GLI-{:05d}-000", "-", ("t1n", "t1c", "t2w", "t2f", "seg")),
}


def _nii(path: Path, shape: tuple[int, ...] = (4, 4, 4), affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4) if affine is None else affine), str(path))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _brats_tree(root: Path, release: str) -> dict[str, str]:
    """Six good subjects (0-5) and three bad ones; returns role -> subject id."""
    pattern, sep, suffixes = BRATS_NAMES[release]
    for i in range(9):
        sid = pattern.format(i)
        for key, suffix in zip(BRATS_KEYS, suffixes):
            if i == 6 and key == "flair":
                continue  # missing modality
            affine = SHIFTED if i == 7 and key == "t2" else None
            shape = (4, 4, 5) if i == 8 and key == "tumor_mask" else (4, 4, 4)
            _nii(root / sid / f"{sid}{sep}{suffix}.nii.gz", shape, affine)
    (root / "notes").mkdir()
    _nii(root / "notes" / "atlas.nii.gz")  # follows no naming: ignored
    return {
        "missing": pattern.format(6),
        "affine": pattern.format(7),
        "shape": pattern.format(8),
        "good": [pattern.format(i) for i in range(6)],
    }


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _assert_datalist(path: Path, included: list[str], keys: set[str], other: set[str] = frozenset({"subject"})) -> dict:
    """Splits are disjoint and cover ``included``; each entry has ``keys`` (file paths, relative, resolving to
    existing files) and ``other`` (non-path fields)."""
    data = _load(path)
    ids = [e["subject"] for name in SPLITS for e in data[name]]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(included)
    for name in SPLITS:
        for entry in data[name]:
            assert set(entry) >= keys
            for key in keys:
                assert not os.path.isabs(entry[key])
                assert (path.parent / entry[key]).is_file()
    return data


@pytest.mark.parametrize("release", ["2021", "2023"])
def test_brats_includes_good_and_reports_bad(tmp_path, release):
    roles = _brats_tree(tmp_path / "brats", release)
    report = prepare_brats(tmp_path / "brats", seed=1)
    assert report.included == roles["good"]
    assert report.missing == {roles["missing"]: ["flair"]}
    assert set(report.mismatched) == {roles["affine"], roles["shape"]}
    assert report.mismatched[roles["affine"]][0].startswith("affine: t2 differs from t1 by up to 2")
    assert report.mismatched[roles["shape"]] == ["shape: tumor_mask (4, 4, 5) != t1 (4, 4, 4)"]
    assert set(report.excluded) == {roles["missing"], roles["affine"], roles["shape"]}
    assert report.ignored_files == [str(tmp_path / "brats" / "notes" / "atlas.nii.gz")]
    assert report.datalist == str((tmp_path / "brats" / "datalist.json").absolute())
    data = _assert_datalist(Path(report.datalist), report.included, set(BRATS_KEYS))
    _, sep, suffixes = BRATS_NAMES[release]
    entry = data["training"][0]
    for key, suffix in zip(BRATS_KEYS, suffixes):  # t1 is not confused with t1ce / t1c / t1n
        assert entry[key] == f"{entry['subject']}/{entry['subject']}{sep}{suffix}.nii.gz"
    assert {e["enhancing_label"] for n in SPLITS for e in data[n]} == {4 if release == "2021" else 3}
    assert data["labels"][f"brats{release}"]["4" if release == "2021" else "3"].endswith("(ET)")
    assert sorted(data["excluded"]) == sorted(report.excluded)
    assert [len(data[n]) for n in SPLITS] == [data["numTraining"], data["numValidation"], data["numTest"]]
    assert report.splits == {n: sorted(e["subject"] for e in data[n]) for n in SPLITS}


def test_brats_seed_output_require_and_tolerance(tmp_path):
    roles = _brats_tree(tmp_path / "brats", "2021")
    first = prepare_brats(tmp_path / "brats", seed=3, write=False)
    assert first.datalist is None and not (tmp_path / "brats" / "datalist.json").exists()
    assert prepare_brats(tmp_path / "brats", seed=3, write=False).splits == first.splits
    splits = {json.dumps(prepare_brats(tmp_path / "brats", seed=s, write=False).splits) for s in range(8)}
    assert len(splits) > 1  # the seed matters
    # optional flair: the subject without it is included, its entry has no flair
    report = prepare_brats(tmp_path / "brats", output=tmp_path / "lists", require="t1,t1ce,t2,tumor_mask")
    assert roles["missing"] in report.included and report.incomplete == {roles["missing"]: ["flair"]}
    data = _assert_datalist(tmp_path / "lists" / "datalist.json", report.included, {"t1", "t1ce", "t2", "tumor_mask"})
    entry = next(e for n in SPLITS for e in data[n] if e["subject"] == roles["missing"])
    assert "flair" not in entry and entry["t1"].startswith("../brats/")
    # a 2 mm shift passes a 3 mm tolerance; shape mismatches do not
    loose = prepare_brats(tmp_path / "brats", output=tmp_path / "loose.json", affine_tol=3.0)
    assert roles["affine"] in loose.included and list(loose.mismatched) == [roles["shape"]]
    assert (tmp_path / "loose.json").is_file()
    # grid checks restricted to a group that excludes the shifted t2 and the reshaped seg
    grouped = prepare_brats(tmp_path / "brats", same_grid=[["t1", "t1ce", "flair"]], write=False)
    assert grouped.mismatched == {} and roles["affine"] in grouped.included
    single = prepare_brats(tmp_path / "brats", same_grid="t1,t2", write=False)  # one group, no outer list
    assert list(single.mismatched) == [roles["affine"]] and roles["shape"] in single.included


def test_brats_duplicates_unreadable_and_errors(tmp_path):
    roles = _brats_tree(tmp_path / "brats", "2021")
    good = roles["good"]
    _nii(tmp_path / "brats" / "copy" / f"{good[0]}_t2.nii.gz")  # second t2 for the same subject
    (tmp_path / "brats" / good[1] / f"{good[1]}_flair.nii.gz").write_bytes(b"")  # truncated download
    report = prepare_brats(tmp_path / "brats", write=False)
    assert report.invalid[good[0]][0].startswith("duplicate t2: ")
    assert report.invalid[good[1]][0].startswith("unreadable flair")
    assert report.included == good[2:]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_brats(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="require"):
        prepare_brats(tmp_path / "brats", require=["t1", "adc"])
    with pytest.raises(ValueError, match="fractions"):
        prepare_brats(tmp_path / "brats", fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="affine_tol"):
        prepare_brats(tmp_path / "brats", affine_tol=-1.0)


def _ixi_tree(t1_dir: Path, t2_dir: Path, pd_dir: Path) -> None:
    """Subjects from three sites; T1 on its own grid as in the released data."""
    t1_grid = np.array([[0, 0, -1.2, 90], [1, 0, 0, -120], [0, 1, 0, -120], [0, 0, 0, 1]], float)
    subjects = {
        "IXI002": ("Guys", "0828"),
        "IXI012": ("HH", "1211"),
        "IXI035": ("IOP", "0873"),
        "IXI101": ("HH", "1234"),
        "IXI200": ("Guys", "0100"),
        "IXI050": ("HH", "0999"),
        "IXI060": ("IOP", "0555"),
        "IXI070": ("Guys", "0777"),
    }
    for sid, (site, series) in subjects.items():
        name = f"{sid}-{site}-{series}"
        _nii(t1_dir / f"{name}-T1.nii.gz", (4, 4, 6), t1_grid)
        _nii(t2_dir / f"{name}-T2.nii.gz")
        if sid == "IXI050":
            continue  # no PD
        _nii(
            pd_dir / f"{name}-PD.nii.gz",
            (4, 5, 4) if sid == "IXI070" else (4, 4, 4),
            SHIFTED if sid == "IXI060" else None,
        )
    _nii(t1_dir / "IXI002-Guys-0828-MRA.nii.gz")  # other IXI modalities are ignored
    _nii(t2_dir / "IXI080-Guys-0800-T2.nii.gz")
    _nii(pd_dir / "IXI080-HH-0800-PD.nii.gz")  # same id, different site


@pytest.mark.parametrize("layout", ["separate", "one_folder"])
def test_ixi_matches_by_id_across_sites(tmp_path, layout):
    dirs = [tmp_path / "ixi" / d for d in ("IXI-T1", "IXI-T2", "IXI-PD")]
    if layout == "one_folder":
        dirs = [tmp_path / "ixi"] * 3
    _ixi_tree(*dirs)
    roots = sorted(set(dirs))
    report = prepare_ixi(roots if layout == "separate" else roots[0], seed=0)
    assert report.included == ["IXI002", "IXI012", "IXI035", "IXI101", "IXI200"]
    assert report.missing == {"IXI050": ["pd"], "IXI080": ["t1"]}
    assert report.mismatched["IXI060"][0].startswith("affine: pd differs from t2")
    assert report.mismatched["IXI070"] == ["shape: pd (4, 5, 4) != t2 (4, 4, 4)"]
    assert report.invalid["IXI080"][0] in ("conflicting site: 'Guys' vs 'HH'", "conflicting site: 'HH' vs 'Guys'")
    assert list(report.invalid) == ["IXI080"]
    assert [Path(p).name for p in report.ignored_files] == ["IXI002-Guys-0828-MRA.nii.gz"]
    assert report.datalist == str((tmp_path / "ixi" / "datalist.json").absolute())
    data = _assert_datalist(Path(report.datalist), report.included, set(IXI_KEYS), {"subject", "site"})
    sites = {e["subject"]: e["site"] for n in SPLITS for e in data[n]}
    assert sites == {"IXI002": "Guys", "IXI012": "HH", "IXI035": "IOP", "IXI101": "HH", "IXI200": "Guys"}
    entry = next(e for n in SPLITS for e in data[n] if e["subject"] == "IXI012")
    assert [Path(entry[k]).name for k in IXI_KEYS] == [f"IXI012-HH-1211-{m}.nii.gz" for m in ("T1", "T2", "PD")]
    # a pre-registered copy is checked with T1 in the grid group: these T1s disagree
    strict = prepare_ixi(roots, same_grid=[["t1", "t2", "pd"]], write=False)
    assert strict.included == [] and strict.mismatched["IXI002"][0].startswith("shape: t2 (4, 4, 4) != t1")


def _synthrad_tree(task1: Path) -> None:
    for region, code in (("brain", "1B"), ("pelvis", "1P")):
        for i in range(1, 7):
            sid = f"{code}A{i:03d}"
            for name in ("mr", "ct", "mask"):
                if (sid, name) == ("1BA005", "ct"):
                    continue
                affine = SHIFTED if (sid, name) == ("1PA005", "mask") else None
                shape = (4, 4, 3) if (sid, name) == ("1PA006", "ct") else (4, 4, 4)
                _nii(task1 / region / sid / f"{name}.nii.gz", shape, affine)
        (task1 / region / "overview").mkdir()
        (task1 / region / "overview" / "parameters.csv").write_text("id\n")


def test_synthrad_both_regions_and_roots(tmp_path):
    _synthrad_tree(tmp_path / "synthrad" / "Task1")
    report = prepare_synthrad(tmp_path / "synthrad")
    brain = [f"1BA{i:03d}" for i in (1, 2, 3, 4, 6)]
    pelvis = [f"1PA{i:03d}" for i in (1, 2, 3, 4)]
    assert report.included == brain + pelvis
    assert report.missing == {"1BA005": ["ct"]}
    assert report.mismatched["1PA005"][0].startswith("affine: brain_mask differs from mr")
    assert report.mismatched["1PA006"] == ["shape: ct (4, 4, 3) != mr (4, 4, 4)"]
    data = _assert_datalist(
        tmp_path / "synthrad" / "datalist.json", report.included, set(SYNTHRAD_KEYS), {"subject", "region"}
    )
    regions = {e["subject"]: e["region"] for n in SPLITS for e in data[n]}
    assert regions == {**{s: "brain" for s in brain}, **{s: "pelvis" for s in pelvis}}
    entry = next(e for n in SPLITS for e in data[n] if e["subject"] == "1PA002")
    assert entry["brain_mask"] == "Task1/pelvis/1PA002/mask.nii.gz" and entry["ct"].endswith("1PA002/ct.nii.gz")
    # root at Task1, at a region folder, or filtered by region
    at_task1 = prepare_synthrad(tmp_path / "synthrad" / "Task1", write=False)
    assert at_task1.included == report.included
    assert prepare_synthrad(tmp_path / "synthrad" / "Task1" / "pelvis", write=False).included == pelvis
    assert prepare_synthrad(tmp_path / "synthrad", regions="brain", write=False).included == brain
    with pytest.raises(FileNotFoundError, match="region folder"):
        prepare_synthrad(tmp_path / "synthrad" / "Task1" / "brain" / "1BA001")


def test_cli_brats_summary_and_missing_root(tmp_path, capsys):
    _brats_tree(tmp_path / "brats", "2023")
    cli = _script("prepare_brats")
    fire.Fire(cli.main, command=[str(tmp_path / "brats"), "--require", "['t1','t1ce']", "--seed", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("brats: 7 subjects included") and "2 excluded" in line and "datalist.json" in line
    data = _load(tmp_path / "brats" / "datalist.json")
    assert data["required"] == ["t1", "t1ce"] and data["seed"] == 2
    with pytest.raises(SystemExit, match="does not exist") as err:
        cli.main(str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(err.value.code)


def test_cli_ixi_dry_run(tmp_path, capsys):
    dirs = [tmp_path / d for d in ("IXI-T1", "IXI-T2", "IXI-PD")]
    _ixi_tree(*dirs)
    _script("prepare_ixi").main(*map(str, dirs), dry_run=True)
    assert capsys.readouterr().out.strip().startswith("ixi: 5 subjects included")
    assert not (tmp_path / "datalist.json").exists()


def test_cli_synthrad_no_usable_subject_exits_nonzero(tmp_path, capsys):
    for sid in ("1BA001", "1BA002"):
        _nii(tmp_path / "Task1" / "brain" / sid / "mr.nii.gz")  # CT missing everywhere
    with pytest.raises(SystemExit) as err:
        _script("prepare_synthrad").main(str(tmp_path))
    assert err.value.code == 1
    assert capsys.readouterr().out.startswith("synthrad: 0 subjects included")
    assert not (tmp_path / "datalist.json").exists()
