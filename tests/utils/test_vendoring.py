"""common.utils.vendoring: the config rewrite of exported bundles and the weights check."""

from __future__ import annotations

import json

import pytest

from common.utils.errors import UserError
from common.utils.vendoring import (
    BUNDLE_ROOT_EXPR,
    checked_weights,
    common_modules,
    sha256_of,
    vendor_config,
)

CONFIG = {
    "imports": ["$import os", "$import common", "$import common.data", "$from common.utils import paths"],
    "bundle_root": "$common.utils.bundle_root('x')",
    "ckpt_dir": "$@bundle_root + '/models'",
    "ckpt_path": "$os.path.join(@ckpt_dir, 'model.pt')",
    "network_def": {"_target_": "common.networks.fagan.FAGANGenerator", "channels": 4},
    "loader": {"_target_": "DataLoader"},
    "initialize": ["$common.data.check_checkpoint(@ckpt_path)", "$'common.x'"],
}


def test_vendor_config_routes_common_through_its_id():
    out = vendor_config(CONFIG)
    assert not any("common" in s for s in out["imports"]) and "$import os" in out["imports"]
    assert out["bundle_root"] == BUNDLE_ROOT_EXPR and list(out)[:5] == [
        "imports", "bundle_root", "vendor_loader", "vendored_modules", "common",
    ]  # fmt: skip
    assert "import" not in out["common"]  # MONAI would parse it as Python before substituting @ references
    assert out["network_def"]["_target_"] == "$@common.networks.fagan.FAGANGenerator"
    assert out["loader"]["_target_"] == "DataLoader"
    assert out["initialize"] == ["$@common.data.check_checkpoint(@ckpt_path)", "$'common.x'"]
    assert (
        out["ckpt_path"]
        == "$@common.utils.vendoring.checked_weights(os.path.join(@ckpt_dir, 'model.pt'), @bundle_root)"
    )
    assert "common.networks.fagan.FAGANGenerator" in out["vendored_modules"]
    assert CONFIG["imports"][1] == "$import common"  # the input is not modified


def test_override_files_get_targets_rewritten_only():
    out = vendor_config({"network_def": {"_target_": "common.networks.residual.ResidualOutput"}, "channels": 8})
    assert out == {"network_def": {"_target_": "$@common.networks.residual.ResidualOutput"}, "channels": 8}
    assert common_modules({"a": ["$common.transforms.slice_divisor(1)"]}) == {"common.transforms.slice_divisor"}


def test_checked_weights(tmp_path):
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    listing = {
        "large_files": [{"path": "models/model.pt", "url": "", "hash_val": sha256_of(weights), "hash_type": "sha256"}]
    }
    (tmp_path / "large_files.yml").write_text(json.dumps(listing))
    assert checked_weights(str(weights), str(tmp_path)) == str(weights)
    weights.write_bytes(b"other weights")
    with pytest.raises(UserError, match=r"model.pt' does not match large_files.yml"):
        checked_weights(str(weights), str(tmp_path))
    (tmp_path / "large_files.yml").write_text("large_files: []\n")  # hand-written YAML, nothing listed
    assert checked_weights(str(weights), str(tmp_path)) == str(weights)
