"""``common.utils.as_flag``: boolean config ids as the command line spells them."""

from __future__ import annotations

import pytest
import torch

from common.inferers.autocast import AutocastInferer
from common.utils import as_flag


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("true", True),
        ("True", True),
        ("false", False),
        ("FALSE", False),
        (" yes ", True),
        ("no", False),
        ("on", True),
        ("off", False),
        ("1", True),
        ("0", False),
    ],
)
def test_as_flag_reads_both_spellings(value, expected):
    assert as_flag(value, "amp") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5, [True]])
def test_as_flag_refuses_other_values_naming_the_id(value):
    with pytest.raises(ValueError, match="resume must be true or false"):
        as_flag(value, "resume")


def test_autocast_inferer_reads_the_command_line_false():
    """``--amp false`` arrives as the string 'false': the inferer must stay in float32 (bool('false') is True)."""
    seen = []

    def net(x):
        seen.append(torch.mm(x, x).dtype)
        return x

    x = torch.ones(2, 2)
    AutocastInferer(enabled="false", device_type="cpu")(x, net)
    AutocastInferer(enabled="true", device_type="cpu")(x, net)
    assert seen == [torch.float32, torch.bfloat16]
