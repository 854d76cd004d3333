from __future__ import annotations

import os

import pytest

from common.data.naming import assign_case_names, case_stem
from common.data.validation import InputDataError


@pytest.mark.parametrize("n", [2, 4])
def test_folder_per_case_gives_folder_names(tmp_path, n):
    cases = [{"t1": str(tmp_path / f"case{i}" / "t1.nii.gz")} for i in range(1, n + 1)]
    out = assign_case_names(cases, "t1")
    assert out is cases
    assert [c["subject"] for c in cases] == [f"case{i}" for i in range(1, n + 1)]


def test_unique_stems_give_stems(tmp_path):
    cases = [{"image": str(tmp_path / "IXI002-Guys-0828-T1.nii.gz")}, {"image": str(tmp_path / "x" / "IXI012.mha")}]
    assert [c["subject"] for c in assign_case_names(cases, "image")] == ["IXI002-Guys-0828-T1", "IXI012"]


def test_nested_layout_keeps_distinguishing_folders(tmp_path):
    cases = [
        {"t1": str(tmp_path / "a" / "case1" / "t1.nii.gz")},
        {"t1": str(tmp_path / "b" / "case1" / "t1.nii.gz")},
        {"t1": str(tmp_path / "a" / "case2" / "t1.nii.gz")},
    ]
    names = [c["subject"] for c in assign_case_names(cases, "t1")]
    assert names == ["a_case1", "b_case1", "a_case2"]
    assert not any(os.sep in n or "/" in n for n in names)


def test_mixed_stems_keep_folder_and_stem(tmp_path):
    cases = [{"t1": str(tmp_path / d / f"{s}.nii.gz")} for d, s in [("c1", "t1"), ("c2", "t1"), ("c2", "t2")]]
    assert [c["subject"] for c in assign_case_names(cases, "t1")] == ["c1_t1", "c2_t1", "c2_t2"]


def test_existing_subject_kept_and_path_subject_gives_basename(tmp_path):
    cases = [
        {"subject": "s007", "t1": str(tmp_path / "case1" / "t1.nii.gz")},
        # MONAI's datalist loader turns a subject that is also a dataset folder into an absolute path
        {"subject": str(tmp_path / "subject_003"), "t1": str(tmp_path / "subject_003" / "t1.nii.gz")},
        {"t1": str(tmp_path / "case2" / "t1.nii.gz")},
    ]
    assert [c["subject"] for c in assign_case_names(cases, "t1")] == ["s007", "subject_003", "t1"]


def test_stem_colliding_with_a_given_subject_falls_back_to_folder(tmp_path):
    cases = [{"subject": "t1", "t1": str(tmp_path / "x" / "t1.nii.gz")}, {"t1": str(tmp_path / "case9" / "t1.nii.gz")}]
    assert [c["subject"] for c in assign_case_names(cases, "t1")] == ["t1", "case9"]


def test_duplicate_subjects_refused_naming_both_files(tmp_path):
    f1, f2 = str(tmp_path / "a" / "t1.nii.gz"), str(tmp_path / "b" / "t1.nii.gz")
    cases = [{"subject": "s1", "t1": f1}, {"t1": str(tmp_path / "c.nii.gz")}, {"subject": "s1", "t1": f2}]
    with pytest.raises(InputDataError, match="'s1'") as info:
        assign_case_names(cases, "t1")
    message = str(info.value)
    assert f1 in message and f2 in message and "entry 0" in message and "entry 2" in message
    assert "c.nii.gz" not in message
    assert "subject" not in cases[1]  # refused before any entry is changed


def test_same_folder_same_stem_refused(tmp_path):
    cases = [{"t1": str(tmp_path / "t1.nii.gz")}, {"t1": str(tmp_path / "t1.mha")}]
    with pytest.raises(InputDataError, match="t1.nii.gz.*t1.mha"):
        assign_case_names(cases, "t1")


def test_entry_without_name_or_file_refused():
    with pytest.raises(InputDataError, match="entry 1 has neither a 'subject' nor a 't1'"):
        assign_case_names([{"t1": "/d/a.nii.gz"}, {"t2": "/d/b.nii.gz"}], "t1")


def test_custom_name_key_and_list_values():
    cases = [{"t1": ["/d/case1/t1.nii.gz"]}, {"t1": ["/d/case2/t1.nii.gz"]}]
    assign_case_names(cases, "t1", name_key="case")
    assert [c["case"] for c in cases] == ["case1", "case2"] and "subject" not in cases[0]


@pytest.mark.parametrize(
    "path,stem", [("/d/c/T1.NII.GZ", "T1"), ("vol.mha", "vol"), ("/d/series", "series"), ("x.json", "x")]
)
def test_case_stem(path, stem):
    assert case_stem(path) == stem
