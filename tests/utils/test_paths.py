"""common.utils.paths: bundle_root is the folder the running config was read from, never another copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from monai.bundle import ConfigParser, ConfigWorkflow

from common.utils.paths import bundle_root, config_bundle_root, repo_root

NAME = "amcgan_contrast_mri"  # a bundle that exists in the repository: its copy must not win


def _bundle_copy(root: Path) -> Path:
    folder = root / NAME
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.0.1"}))
    config = {
        "imports": ["$import common", "$import common.utils"],
        "bundle_root": f"$common.utils.bundle_root('{NAME}')",
        "run": "$@bundle_root",
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    return folder


def test_workflow_resolves_the_folder_its_config_was_read_from(tmp_path, monkeypatch):
    assert (Path(repo_root()) / "bundles" / NAME).is_dir()
    copy = _bundle_copy(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(copy / "configs" / "inference.json", tmp_path)
    wf = ConfigWorkflow(config_file=relative, logging_file=False, workflow_type=None)
    wf.initialize()
    assert wf.run() == [str(copy)]  # resolved inside the workflow, as `monai.bundle run` does


def test_override_wins(tmp_path):
    copy = _bundle_copy(tmp_path)
    wf = ConfigWorkflow(
        config_file=str(copy / "configs" / "inference.json"),
        logging_file=False,
        workflow_type=None,
        bundle_root="/some/where",
    )
    wf.initialize()
    assert wf.run() == ["/some/where"]


@pytest.mark.parametrize("inside", [True, False])
def test_without_workflow_cwd_bundle_then_repo(tmp_path, monkeypatch, inside):
    copy = _bundle_copy(tmp_path)
    monkeypatch.chdir(copy if inside else tmp_path)
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    expected = str(copy) if inside else str(Path(repo_root()) / "bundles" / NAME)
    assert parser.get_parsed_content("bundle_root") == expected
    assert config_bundle_root() is None
    assert bundle_root(NAME) == expected
