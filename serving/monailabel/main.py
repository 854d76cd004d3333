"""A minimal MONAI Label app serving the image-synthesis bundles of this repository (or exported archives).

Start it with::

    monailabel start_server --app serving/monailabel --studies STUDIES \\
        --conf models dual_discriminator_synthesis --conf configs inference.json,demo.json

``--conf`` keys (all optional):

- ``bundles``: a folder of bundle folders (default: this repository's ``bundles/``) or one bundle folder
  (e.g. an unpacked archive).
- ``models``: comma-separated bundle folder names to serve, or ``all`` (default: every bundle there with
  weights; a named bundle without weights is an error).
- ``configs``: comma-separated config files merged in order (names relative to each bundle's ``configs/``, or
  absolute paths), default ``inference.json``; ``inference.json,demo.json`` matches demo-width weights.
- ``configs_<bundle>``: the same for one bundle only (e.g. ``--conf configs_hrfcn_contrast_t1
  inference.json,demo.json,/path/ckpt.json`` to point that bundle at its own ``ckpt_dir``).
- ``preload``: ``true`` builds every network at start.

Each model is a :class:`lib.infers.SynthesisInferTask` named after its bundle folder. Results are images, so
they are not saved as datastore labels unless a request asks for ``save_label``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lib.bundle import SynthesisBundle, bundle_folders
from lib.infers import SynthesisInferTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool

__all__ = ["SynthesisApp"]

logger = logging.getLogger(__name__)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class SynthesisApp(MONAILabelApp):
    """MONAI Label app with one :class:`SynthesisInferTask` per served bundle (no training, no labels)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        default_bundles = Path(app_dir).resolve().parents[1] / "bundles"
        self.bundles_dir = Path(os.path.expanduser(conf.get("bundles", str(default_bundles)))).resolve()
        if not self.bundles_dir.is_dir():
            raise ValueError(f"--conf bundles: '{self.bundles_dir}' is not a folder")
        self.model_names = _split(conf.get("models", "all"))
        self.config_files = _split(conf.get("configs", "inference.json"))
        self.preload = bool(strtobool(conf.get("preload", "false")))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Medical image synthesis bundles",
            description="Synthetic images (contrast enhancement, cross-modality, super-resolution) from MONAI bundles",
            version="0.1.0",
        )

    def init_infers(self) -> dict[str, InferTask]:
        folders = {p.name: p for p in bundle_folders(self.bundles_dir)}
        serve_all = self.model_names in ([], ["all"])
        names = sorted(folders) if serve_all else self.model_names
        unknown = [n for n in names if n not in folders]
        if unknown:
            raise ValueError(f"--conf models: no bundle {unknown} in '{self.bundles_dir}' (found {sorted(folders)})")
        infers: dict[str, InferTask] = {}
        for name in names:
            configs = _split(self.conf.get(f"configs_{name}", "")) or self.config_files
            bundle = SynthesisBundle(folders[name], configs)
            if not os.path.isfile(bundle.ckpt_path):  # checked before the network is built
                if not serve_all:
                    raise ValueError(f"--conf models: bundle '{name}' has no weights at '{bundle.ckpt_path}'")
                logger.warning(f"not serving '{name}': no weights at '{bundle.ckpt_path}'")
                continue
            task = SynthesisInferTask(bundle, preload=False)
            if self.preload:
                task._get_network("cpu", None)
            infers[name] = task
        if not infers:
            raise ValueError(f"no bundle with weights to serve in '{self.bundles_dir}' (configs {self.config_files})")
        return infers

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        """Map the other modalities' datastore ids to paths, then run MONAI Label's inference."""
        request = dict(request)
        request.setdefault("save_label", False)
        task = self._infers.get(request.get("model"))
        if isinstance(task, SynthesisInferTask):
            store = datastore if datastore else self.datastore()
            request = task.resolve_request(request, store.get_image_uri)
        return super().infer(request, datastore)
