"""The serving tests import the app's ``lib`` as MONAI Label loads it (``serving/monailabel`` on ``sys.path``) and
the contract's tiny bundle settings (``tests/bundles/contract.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
for _path in (_REPO / "serving" / "monailabel", _REPO / "tests" / "bundles"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
