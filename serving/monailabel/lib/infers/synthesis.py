"""MONAI Label infer task for image-synthesis bundles: the result is a float image, not a label map.

MONAI Label's ``BundleInferTask`` is written for segmentation: it types every bundle "segmentation", builds
labels from the description, reads the network input from key ``image`` and saves a label. This task runs a
bundle's own inference components instead (:class:`~lib.bundle.SynthesisBundle`): the request's image and the
other modalities the bundle loads (mapped from datastore images) become one datalist entry; the bundle's
``preprocessing``, ``inferer`` and ``postprocessing`` (minus ``SaveImaged``) run on it; the result is written
as float32 in the geometry the postprocessing gives it: the input's grid, or the finer grid of a
super-resolution bundle.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from ..bundle import BundleCased, SynthesisBundle, sibling_name, write_image

__all__ = ["SynthesisInferTask"]


class SynthesisInferTask(BasicInferTask):
    """Serve one synthesis bundle as a MONAI Label model.

    Type ``others`` (MONAI Label has no image type), no labels, ``dimension`` and ``description`` from the
    bundle's metadata (:attr:`SynthesisBundle.dimension`: a slice-by-slice 2D network serves 3D volumes).
    Request fields: ``image`` (datastore id or path of the primary modality, e.g. ``t1``), optionally one field
    per other modality the bundle loads (``{"t2": "<id or path>"}``; missing ones are taken from the files
    beside ``image``: ``<case>_t1.nii.gz -> <case>_t2.nii.gz`` or ``t1.nii.gz -> t2.nii.gz``) and
    ``result_extension`` (default ``.nii.gz``).

    Args:
        bundle: the parsed bundle.
        preload: build the network on every device at start (MONAI Label's ``preload``).
    """

    def __init__(self, bundle: SynthesisBundle, preload: bool = False) -> None:
        self.bundle = bundle
        super().__init__(
            path=bundle.ckpt_path,
            network=bundle.network,
            type=InferType.OTHERS,
            labels=None,
            dimension=bundle.dimension,
            description=bundle.description,
            model_state_dict="model",
            input_key="image",
            output_label_key="pred",
            config={"result_extension": ".nii.gz", "inputs": list(bundle.input_keys)},
            load_strict=True,
            preload=preload,
        )

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["output"] = "image"  # what the client should do with the result: load it as a volume, not a label
        info["inputs"] = list(self.bundle.input_keys)
        info["bundle"] = self.bundle.name
        return info

    def is_valid(self) -> bool:
        """Only with weights: a network without its checkpoint would synthesise noise."""
        return os.path.isfile(self.bundle.ckpt_path)

    def resolve_request(self, request: Mapping[str, Any], resolve: Callable[[str], str]) -> dict[str, Any]:
        """Turn datastore ids into paths for the modality fields of ``request`` (``image`` stays an id).

        A modality the request does not name is looked up as the sibling id of ``image`` (``<case>_t1`` ->
        ``<case>_t2``) when ``image`` is an id; ``resolve`` is the datastore's ``get_image_uri`` (``""`` when
        the id is unknown).
        """
        out = dict(request)
        image = out.get("image")
        image_is_id = isinstance(image, str) and bool(image) and not os.path.exists(image)
        for key in self.bundle.input_keys:
            if key == self.bundle.primary_key:
                continue
            given = out.get(key)
            if isinstance(given, str) and given:
                if not os.path.exists(given):
                    out[key] = resolve(given) or given  # unknown id: left as given, the bundle's check names it
            elif image_is_id:
                name = sibling_name(image, self.bundle.primary_key, key)
                uri = resolve(name) if name else ""
                if uri:
                    out[key] = uri
        return out

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        return [BundleCased(self.bundle), self.bundle.preprocessing]

    def inferer(self, data: Mapping[str, Any] | None = None):
        return self.bundle.inferer

    def inverse_transforms(self, data: Mapping[str, Any] | None = None) -> None:
        return None  # the bundle's postprocessing inverts its own preprocessing (Invertd) where it needs to

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        return [self.bundle.postprocessing]

    def _get_network(self, device, data):
        if not os.path.isfile(self.bundle.ckpt_path):
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR,
                f"bundle '{self.bundle.name}': no weights at '{self.bundle.ckpt_path}'",
            )
        return super()._get_network(device, data)

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """Write ``data['pred']`` (float32, its own affine) to a temporary file; returns ``(path, result json)``."""
        ext = extension or data.get("result_extension") or ".nii.gz"
        path = tempfile.NamedTemporaryFile(suffix=ext, delete=False).name
        pred = data[self.output_label_key]
        write_image(pred, path, dtype=np.float32)
        result = {
            "type": "image",
            "key": self.bundle.target_key,
            "shape": [int(s) for s in pred.shape[1:]],
            "affine": np.asarray(pred.affine, dtype=np.float64).tolist(),
        }
        return path, result
