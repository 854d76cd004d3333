"""A synthesis bundle read for serving: its own inference components, what its metadata says, its inputs.

Nothing here imports MONAI Label: :class:`SynthesisBundle` parses a bundle folder's ``configs/inference.json``
(plus override files) with MONAI's :class:`~monai.bundle.ConfigParser` and hands out the pieces the bundle's
own evaluator uses (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing`` without its
``SaveImaged``, ``ckpt_path``). A request's images become one entry of the bundle's own datalist: the bundle's
``datalist_data`` and ``initialize`` (case names, input checks, checkpoint check) run on it, so a served case
is read exactly as ``python -m monai.bundle run --config_file configs/inference.json`` reads one.

The task type, the dimension and the description come from ``configs/metadata.json`` — never a guessed
"segmentation" or labels parsed from the description: the output must be declared ``"type": "image"``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.data.image_writer import resolve_writer
from monai.inferers import Inferer, SliceInferer
from monai.transforms import Compose, LoadImaged, SaveImaged

__all__ = [
    "IMAGE_EXTENSIONS",
    "SynthesisBundle",
    "BundleCased",
    "bundle_folders",
    "split_extension",
    "sibling_name",
    "sibling_path",
    "write_image",
]

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd")
CASE_LIST = "monailabel"  # the datalist key of the one-entry datalist written for a request


def split_extension(name: str) -> tuple[str, str]:
    """``'a/b_t1.nii.gz' -> ('a/b_t1', '.nii.gz')``: the longest known image extension, else the last suffix."""
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def sibling_name(name: str, primary: str, key: str) -> str | None:
    """The name of modality ``key`` beside an image named after modality ``primary``.

    Two layouts are understood: a flat datastore (``<case>_<primary>`` -> ``<case>_<key>``, e.g.
    ``phantom_001_t1 -> phantom_001_t2``) and a folder per case (``<primary>`` -> ``<key>``, e.g. the demo's
    ``phantom_001/t1.nii.gz -> phantom_001/t2.nii.gz``). Returns None when ``name`` ends with neither.
    """
    if name == primary:
        return key
    if name.endswith("_" + primary):
        return name[: -len(primary)] + key
    return None


def sibling_path(path: str, primary: str, key: str) -> str | None:
    """:func:`sibling_name` applied to a file path (same folder, same extension); None when it does not apply."""
    folder, base = os.path.split(path)
    stem, ext = split_extension(base)
    name = sibling_name(stem, primary, key)
    return None if name is None else os.path.join(folder, name + ext)


def bundle_folders(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a bundle folder (holds ``configs/metadata.json``), else its bundle sub-folders."""
    root = Path(root)
    if (root / "configs" / "metadata.json").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def _flatten(transforms: Sequence[Callable]) -> Iterator[Callable]:
    for t in transforms:
        if isinstance(t, Compose):
            yield from _flatten(t.transforms)
        else:
            yield t


def write_image(image: torch.Tensor, path: str, dtype: np.dtype | type = np.float32) -> str:
    """Write a channel-first ``image`` (``(1, *spatial)``) to ``path`` in its own geometry, as ``SaveImaged`` does.

    The affine is the image's own (``MetaTensor.affine``, no resampling), the channel is squeezed, the voxels
    are written as ``dtype``; the writer is MONAI's first for the extension (NIfTI: nibabel, else ITK).
    """
    _, ext = split_extension(path)
    if not isinstance(image, MetaTensor):
        raise ValueError(f"image must be a MetaTensor carrying its affine, got {type(image).__name__}")
    errors = []
    for writer_cls in resolve_writer(ext.lstrip(".")):
        try:
            writer = writer_cls(output_dtype=dtype)
            writer.set_data_array(image, channel_dim=0, squeeze_end_dims=True)
            writer.set_metadata(dict(image.meta), resample=False)
            writer.write(path, verbose=False)
            return path
        except Exception as e:  # the next writer may support what this one does not (as SaveImage does)
            errors.append(f"{writer_cls.__name__}: {e}")
    raise RuntimeError(f"no MONAI writer could write '{path}': {'; '.join(errors)}")


class SynthesisBundle:
    """One image-synthesis bundle folder, parsed once, serving any number of cases.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``models/``); an unpacked archive that vendors
            ``common/`` puts itself on ``sys.path``.
        configs: config files merged in order, names relative to ``<bundle_dir>/configs`` or absolute
            (e.g. ``("inference.json", "demo.json")`` for demo-width weights).
        overrides: ``{config id: value}`` applied after the files (``bundle_root`` is always ``bundle_dir``).

    Raises:
        ValueError: ``bundle_dir`` has no ``configs/metadata.json``, a config file is missing, the metadata does
            not declare an image output, or the preprocessing loads no image.
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        configs: Sequence[str] = ("inference.json",),
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        root = Path(bundle_dir).resolve()
        meta_file = root / "configs" / "metadata.json"
        if not meta_file.is_file():
            raise ValueError(f"bundle_dir '{root}' has no configs/metadata.json")
        files = [str(c) if os.path.isabs(c) else str(root / "configs" / c) for c in configs]
        missing = [f for f in files if not os.path.isfile(f)]
        if not files or missing:
            raise ValueError(f"configs: missing config file(s) {missing or '(none given)'} of bundle '{root.name}'")
        if (root / "common").is_dir() and str(root) not in sys.path:
            sys.path.insert(0, str(root))  # an exported archive carries its own copy of `common`
        self.root = root
        self.name = root.name
        self.metadata: dict = json.loads(meta_file.read_text())
        parser = ConfigParser()
        parser.read_config(files)
        parser.read_meta(str(meta_file))
        parser.update({"bundle_root": str(root), **dict(overrides or {})})
        self._config = copy.deepcopy(parser.get())
        self.parser = parser
        self._check_output_type()
        self.preprocessing: Compose = parser.get_parsed_content("preprocessing")
        self.input_keys = self._load_keys()
        self.primary_key: str = self._primary_key()
        self._network: torch.nn.Module | None = None

    # -- what the metadata declares ------------------------------------------------------------------------------
    def _data_format(self, side: str) -> dict:
        formats = self.metadata.get("network_data_format", {}).get(side, {})
        if not formats:
            raise ValueError(f"bundle '{self.name}': metadata network_data_format has no {side}")
        return formats.get("image" if side == "inputs" else "pred", next(iter(formats.values())))

    def _check_output_type(self) -> None:
        kind = self._data_format("outputs").get("type")
        if kind != "image":
            raise ValueError(
                f"bundle '{self.name}': metadata output type is {kind!r}, not 'image'; this task serves image "
                "synthesis bundles only (MONAI Label's BundleInferTask serves segmentation bundles)"
            )

    @property
    def network_dims(self) -> int:
        """Spatial dimensions of the network's input, from ``network_data_format.inputs.image.spatial_shape``."""
        return len(self._data_format("inputs")["spatial_shape"])

    @property
    def dimension(self) -> int:
        """Dimension of the image a request sends: the network's, plus one for a slice-by-slice inferer."""
        inner = self.inferer
        while not isinstance(inner, SliceInferer) and isinstance(getattr(inner, "inferer", None), Inferer):
            inner = inner.inferer  # e.g. common.inferers.AutocastInferer wraps the real inferer
        return self.network_dims + (1 if isinstance(inner, SliceInferer) else 0)

    @property
    def description(self) -> str:
        inputs = ", ".join(self.input_keys)
        return f"{self.metadata.get('task') or self.metadata.get('name', self.name)} [inputs: {inputs}]"

    @property
    def target_key(self) -> str:
        return str(self.parser.get_parsed_content("target_key")) if "target_key" in self.parser else "pred"

    # -- the bundle's own components -----------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> str:
        return str(self.parser.get_parsed_content("ckpt_path"))

    @property
    def network(self) -> torch.nn.Module:
        """``network_def`` built once (on CPU, untrained); the serving task loads ``ckpt_path`` into copies."""
        if self._network is None:
            self._network = self.parser.get_parsed_content("network_def")
        return self._network

    @property
    def inferer(self) -> Inferer:
        return self.parser.get_parsed_content("inferer")

    @property
    def postprocessing(self) -> Compose:
        """The bundle's ``postprocessing`` without its ``SaveImaged`` (the server writes the result itself)."""
        post = self.parser.get_parsed_content("postprocessing")
        return Compose([t for t in _flatten(post.transforms) if not isinstance(t, SaveImaged)])

    def _load_keys(self) -> list[str]:
        keys: list[str] = []
        for t in _flatten(self.preprocessing.transforms):
            if isinstance(t, LoadImaged):
                keys.extend(str(k) for k in t.keys if str(k) not in keys)
        if not keys:
            raise ValueError(f"bundle '{self.name}': preprocessing has no LoadImaged, nothing to map a request to")
        return keys

    def _primary_key(self) -> str:
        for config_id in ("reference_key", "source_keys"):
            if config_id in self.parser:
                value = self.parser.get_parsed_content(config_id)
                value = value[0] if isinstance(value, (list, tuple)) else value
                if value in self.input_keys:
                    return str(value)
        return self.input_keys[0]

    # -- one request -> one case ---------------------------------------------------------------------------------
    def inputs_from_request(self, request: Mapping[str, Any]) -> dict[str, str]:
        """``{datalist key: path}`` of a request: ``image`` is the primary key's image; every other key the
        bundle loads is the request's own value for that key, else the sibling file of ``image``
        (:func:`sibling_path`) when it exists. Keys found nowhere are left out: the bundle's checks name them.

        Raises:
            ValueError: the request has no image path.
        """
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise ValueError(f"request 'image' must be an image path, got {type(image).__name__}")
        inputs = {self.primary_key: image}
        for key in self.input_keys:
            if key == self.primary_key:
                continue
            given = request.get(key)
            if isinstance(given, str) and given:
                inputs[key] = given
                continue
            sibling = sibling_path(image, self.primary_key, key)
            if sibling is not None and os.path.isfile(sibling):
                inputs[key] = sibling
        return inputs

    def case(self, inputs: Mapping[str, str]) -> dict:
        """The bundle's own datalist entry for ``inputs``: ``datalist_data`` read from a one-entry datalist,
        after the bundle's ``initialize`` (case names, input and checkpoint checks) ran on it.

        Raises:
            whatever the bundle's checks raise (``common.utils.errors.UserError`` subclasses naming the file).
        """
        with tempfile.TemporaryDirectory(prefix="synthesis_case_") as tmp:
            datalist = os.path.join(tmp, "datalist.json")
            with open(datalist, "w") as f:
                json.dump({CASE_LIST: [dict(inputs)]}, f)
            parser = ConfigParser(copy.deepcopy(self._config))
            parser.update(
                {
                    "dataset_dir": tmp,
                    "datalist": datalist,
                    "datalist_key": CASE_LIST,
                    "output_dir": os.path.join(tmp, "out"),
                    "ckpt_path": self.ckpt_path,
                }
            )
            if "initialize" in parser:
                parser.get_parsed_content("initialize")
            cases = parser.get_parsed_content("datalist_data")
        return dict(cases[0])


class BundleCased:
    """Dictionary transform: a MONAI Label request -> the bundle's datalist entry for it (then ``preprocessing``).

    The request's ``image`` (a path) and any per-key values are mapped by
    :meth:`SynthesisBundle.inputs_from_request`; every other request field (device, result extension, ...) is
    kept, except ``image``, which the bundle's preprocessing builds from its source keys.
    """

    def __init__(self, bundle: SynthesisBundle) -> None:
        self.bundle = bundle

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        case = self.bundle.case(self.bundle.inputs_from_request(data))
        out = {k: v for k, v in data.items() if k != "image"}
        out.update(case)
        return out
