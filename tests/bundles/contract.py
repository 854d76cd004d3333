"""The bundle contract as a test harness: one :class:`BundleSpec` entry per bundle, one set of generic tests.

``tests/bundles/test_contract.py`` runs every test of the contract (``shared/specs/bundle_contract.md``
sections 4-7 and the template-hardening rows) on every bundle registered in :data:`BUNDLES`: train, resume
equals uninterrupted, evaluate equals inference, inference geometry (oblique LPS input), unique case names
without a ``subject`` key, every override file builds and trains one iteration, every bad input of section
6, refused training data, the non-finite guard, the training lock, ``check_properties`` of every config,
``amp`` on CPU, and one command-line smoke run. A new bundle gets all of it by adding one entry here; its
own ``test_<bundle>.py`` keeps only what is specific to its paper.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "BUNDLES",
    "BundleSpec",
    "workflow",
    "run",
    "abs_case",
    "write_datalist",
    "error_in_chain",
    "save_like",
    "load",
    "load_checkpoint",
    "sha256",
    "collated",
    "files_under",
    "override_files",
    "psnr",
    "output_path",
    "oblique_affine",
    "bad_case",
    "cli",
]


@dataclass(frozen=True)
class BundleSpec:
    """What the generic contract tests need to know about one bundle.

    Attributes:
        name: the bundle folder under ``bundles/``.
        tiny: overrides of top-level ids that shrink widths, patches, epochs and loaders for the tiny phantom
            (applied to every workflow: train, evaluate and inference configs share their ids).
        tiny_train: overrides applied to training and evaluation workflows only (e.g. inner ids of train.json).
        source_keys: datalist keys the inference config reads (also what bad-input tests break).
        target_key: the datalist key of the target image.
        extra_infer_keys: other keys inference needs (e.g. a brain mask), copied as they are.
        iterations: training iterations of one tiny epoch.
        schedule: ``n -> overrides`` giving an ``n``-epoch schedule (``max_epochs`` and whatever sets it).
        divergent: overrides that make training diverge within its first tiny epoch (learning rates).
        infer_configs: the config files of plain inference.
        eval_configs: the config files of evaluation (override files on train.json).
        train_configs: the config files of training.
        override_settings: ``{override file: settings}`` applied with that override in the every-override test
            (e.g. a 2D crop for a 2D variant, where ``tiny`` holds the 3D one).
        extra_overrides: override files besides ``configs/ablations/*.json`` that must build and train.
        infer_overrides: config files checked with ``check_properties`` as inference workflows.
        geometry: ``(shape, affine) -> (shape, affine)`` of the written output for an input grid (identity
            for same-grid synthesis; the finer grid for super-resolution).
        cli_smoke: whether this bundle's command-line train smoke test runs.
        eval_infer_configs: the inference config files whose output evaluation scores (super-resolution:
            inference from the degraded high-resolution volume); default ``infer_configs``.
        paired: whether source and target are different images (a super-resolution bundle's target is its
            own source at a finer grid: no shape/affine pairing to refuse).
        eval_target_mask: a mask key the bundle applies to its target before scoring (a skull-stripping
            bundle scores against the skull-stripped target, with the target file's range as the peak, so its
            PSNR compares with the other bundles of its task); None: the target file as it is.
    """

    name: str
    tiny: dict
    source_keys: tuple[str, ...]
    target_key: str
    tiny_train: dict = field(default_factory=dict)
    extra_infer_keys: tuple[str, ...] = ()
    iterations: int = 2
    schedule: Callable[[int], dict] = field(default=lambda n: {"max_epochs": n})
    divergent: dict = field(default_factory=lambda: {"learning_rate": 1e30})
    infer_configs: tuple[str, ...] = ("inference.json",)
    eval_configs: tuple[str, ...] = ("train.json", "evaluate.json")
    train_configs: tuple[str, ...] = ("train.json",)
    extra_overrides: tuple[str, ...] = ()
    override_settings: dict = field(default_factory=dict)
    infer_overrides: tuple[str, ...] = ()
    geometry: Callable[[tuple, np.ndarray], tuple[tuple, np.ndarray]] = field(default=lambda s, a: (tuple(s), a))
    cli_smoke: bool = True
    eval_target_mask: str | None = None
    eval_infer_configs: tuple[str, ...] | None = None
    paired: bool = True

    @property
    def configs(self) -> Path:
        return REPO / "bundles" / self.name / "configs"

    def __str__(self) -> str:
        return self.name


def super_resolution_geometry(
    scale: int, slice_axis: int = 2
) -> Callable[[tuple, np.ndarray], tuple[tuple, np.ndarray]]:
    """Expected output grid of an in-plane x``scale`` super-resolution: ``scale`` times the voxels, spacing / scale,
    and the same field of view (voxel centres move by ``(1 / scale - 1) / 2`` of an input voxel)."""

    def geometry(shape: tuple, affine: np.ndarray) -> tuple[tuple, np.ndarray]:
        factors = np.array([1.0 if a == slice_axis else 1.0 / scale for a in range(3)])
        out = np.array(affine, dtype=np.float64)
        out[:3, 3] = affine[:3, :3] @ ((factors - 1.0) / 2.0) + affine[:3, 3]
        out[:3, :3] = affine[:3, :3] * factors[None, :]
        return tuple(s if a == slice_axis else s * scale for a, s in enumerate(shape)), out

    return geometry


BUNDLES: list[BundleSpec] = [
    BundleSpec(
        name="amcgan_contrast_mri",
        tiny={
            "channels": 4,
            "msfc_channels": 2,
            "num_res_blocks": 1,
            "d_channels": 4,
            "d_num_layers": 4,  # a 4-layer PatchGAN takes the phantom's 32 x 40 slices (six layers need 48)
            "n_epochs_constant": 1,
            "n_epochs_decay": 0,
            "slices_per_volume": 1,  # 3 training volumes x 1 slice, batch 2 -> 2 iterations per epoch
            "num_workers": 0,
            "slice_pixels_per_batch": 12 * 32 * 40,  # 12 of the tiny phantom's 32 x 40 slices at once
        },
        source_keys=("t1",),
        target_key="t1ce",
        schedule=lambda n: {"n_epochs_constant": n, "n_epochs_decay": 0},
        divergent={"learning_rate": 1e30, "d_learning_rate": 1e30},
    ),
    BundleSpec(
        name="hrfcn_contrast_t1",
        tiny={
            "stem_width": 2,
            "channels": [4, 4, 4],
            "num_res_blocks": 1,
            "patch_hw": [16, 16],
            "batch_size": 1,
            "num_samples": 2,
            "cache_rate": 0.0,
            "num_workers": 0,
            "max_epochs": 1,
            "sw_batch_size": 16,
            "unet2d_channels": [4, 4, 4, 4, 4],
            "unet3d_channels": [4, 4, 4, 4],
        },
        source_keys=("t1", "t2", "adc"),
        iterations=3,  # 3 training volumes, batch 1 (two patches each)
        eval_target_mask="brain_mask",
        target_key="t1ce",
        extra_infer_keys=("brain_mask",),
        extra_overrides=("train_t1_to_t2.json", "train_t1_to_adc.json"),
        infer_overrides=("inference_missing.json",),
    ),
    BundleSpec(
        name="dual_discriminator_synthesis",
        tiny={
            "unet_channels": [4, 4, 8, 8],
            "unet_res_units": 0,
            "fcn_channels": [4, 4, 8, 8],
            "d1_channels": [4, 4, 4],
            "d1_conv_channels": 4,
            "d1_fc_channels": [8, 4],
            "d2_channels": [4, 4, 4],
            "crop_size": [16, 16, 16],
            "batch_size": 2,
            "num_samples": 1,
            "patches_per_volume": 1,  # 3 training volumes, batch 2 -> 2 iterations per epoch
            "max_epochs": 1,
            "val_interval": 1,
            "num_workers": 0,
            "sw_batch_size": 8,
        },
        source_keys=("t1",),
        target_key="t2",
        divergent={"learning_rate": 1e30, "d_learning_rate": 1e30},
        extra_overrides=("task_mr_to_ct.json", "train_2d.json"),
        override_settings={"train_2d.json": {"crop_size": [16, 16, 1]}},
    ),
    BundleSpec(
        name="fagan_super_resolution",
        tiny={
            "channels": 4,
            "num_blocks": 1,
            "ca_reduction": 2,
            "d_channels": 4,
            "d_num_stages": 2,
            "d_dense_channels": 8,
            "hr_patch_size": 16,
            "batch_size": 3,
            "slices_per_volume": 2,  # 3 training volumes x 2 slices, batch 3 -> 2 iterations per epoch
            "max_epochs": 1,
            "perceptual_network": "none",
            "lambda_perceptual": 0.0,
            "num_workers": 0,
            "sa_kv_pool": 2,  # self-attention over a whole x4 slice: N^2 memory; pooled keys and few slices at once
            "slice_pixels_per_batch": 160,  # 2 of the tiny phantom's 8 x 10 low-resolution slices
        },
        source_keys=("t1",),
        target_key="t1",
        divergent={"learning_rate": 1e30, "d_learning_rate": 1e30},
        extra_overrides=("scale_x2.json", "degradation_kspace.json"),
        infer_overrides=("inference_from_hr.json",),
        eval_infer_configs=("inference.json", "inference_from_hr.json"),
        geometry=super_resolution_geometry(4),
        paired=False,
    ),
    BundleSpec(
        name="context_gan_synthesis",
        tiny={
            "channels": [4, 4, 4, 8, 8, 8, 4, 4],
            "kernel_sizes": [5, 3, 3, 3, 5, 3, 3, 3, 3],
            "patch_size": 24,
            "target_patch_size": 16,
            "d_channels": [4, 4, 4],
            "d_bottleneck_channels": 4,
            "d_fc_channels": [8, 4],
            "patches_per_volume": 2,  # 3 training volumes x 2 patches, batch 3 -> 2 iterations per epoch
            "batch_size": 3,
            "max_epochs": 1,
            "val_interval": 1,
            "num_workers": 0,
            "sw_batch_size": 64,
        },
        source_keys=("t1ce",),
        target_key="t2",
        divergent={"learning_rate": 1e30, "d_learning_rate": 1e30},
        extra_overrides=("task_t1_to_t2.json", "task_mr_to_ct.json"),
    ),
]


def workflow(spec: BundleSpec, files, root: Path, workflow_type: str = "train", **override) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` of ``spec``'s config ``files`` with tiny settings and outputs under ``root``."""
    settings = dict(spec.tiny)
    if workflow_type == "train":
        settings.update(spec.tiny_train)
    settings.update(bundle_root=str(root), ckpt_dir=str(root / "models"), output_dir=str(root / "eval"))
    settings["log_dir"] = str(root / "logs")
    settings.update(override)
    settings = {k: v for k, v in settings.items() if v is not None}  # None: keep the config's own value
    return ConfigWorkflow(
        config_file=[str(spec.configs / f) for f in files],
        meta_file=str(spec.configs / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **settings,
    )


def run(wf: ConfigWorkflow) -> ConfigWorkflow:
    """initialize, run, finalize (finalize also runs when ``run`` raises, as the command line's exit would)."""
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    return wf


def abs_case(root: str | Path, case: dict) -> dict:
    """A datalist entry with every path made absolute against ``root``."""
    return {k: (v if k == "subject" else os.path.join(str(root), v)) for k, v in case.items()}


def write_datalist(path: Path, **splits) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits))
    return path


def error_in_chain(error: BaseException, cls: type) -> BaseException | None:
    """The first exception of type ``cls`` in ``error``'s cause/context chain, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, cls):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def save_like(reference: str, path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> str:
    """Write ``data`` as NIfTI at ``path`` with ``reference``'s affine (or ``affine``); returns the path."""
    ref = nib.load(reference)
    nib.save(nib.Nifti1Image(np.asarray(data), ref.affine if affine is None else affine), str(path))
    return str(path)


def load(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


def override_files(spec: BundleSpec) -> list[str]:
    found = sorted(str(p.relative_to(spec.configs)) for p in (spec.configs / "ablations").glob("*.json"))
    return found + list(spec.extra_overrides)


def psnr(pred: np.ndarray, target: np.ndarray, peak: float | None = None) -> float:
    """PSNR with ``peak`` (default: the target's range)."""
    peak = float(target.max() - target.min()) if peak is None else peak
    return 10 * math.log10(peak**2 / float(np.mean((pred.astype(np.float64) - target) ** 2)))


def output_path(spec: BundleSpec, wf, out: Path, case: str) -> Path:
    suffix = wf.parser.get_parsed_content("output_suffix")
    return out / case / f"{case}_{suffix}.nii.gz"


def oblique_affine(spacing=(0.9, 1.1, 2.5)) -> np.ndarray:
    """LPS-like orientation (x and y flipped), rotated 20 degrees about z and 10 about x: non-diagonal."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [31.5, -12.25, 7.0]
    return affine


def bad_case(spec: BundleSpec, tiny_phantom: str, folder: Path, kind: str) -> tuple[dict, str]:
    """One test case broken in one way: ``(entry, text the error must name)``."""
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    key = spec.source_keys[0]
    data, affine = load(case[key])
    bad = folder / f"bad_{key}.nii.gz"
    if kind == "shape":
        case[spec.target_key] = save_like(
            case[spec.target_key], folder / "target.nii.gz", load(case[spec.target_key])[0][:, :, :-2]
        )
        return case, case[spec.target_key]
    if kind == "affine":
        moved = affine.copy()
        moved[0, 3] += 3.0
        case[spec.target_key] = save_like(
            case[spec.target_key], folder / "target.nii.gz", load(case[spec.target_key])[0], moved
        )
        return case, case[spec.target_key]
    if kind == "missing_file":
        case[key] = str(folder / "no_such_file.nii.gz")
    elif kind == "missing_key":
        case.pop(key)
        return case, f"'{key}'"
    elif kind == "nan":
        data[3, 4, 5] = np.nan
        case[key] = save_like(case[key], bad, data)
    elif kind == "multichannel":
        case[key] = save_like(case[key], bad, np.stack([data, data], axis=-1))
    elif kind == "corrupt":
        bad.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
        case[key] = str(bad)
    elif kind == "truncated":
        raw = Path(case[key]).read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
        case[key] = str(bad)
    elif kind == "2d":
        case[key] = save_like(case[key], bad, data[:, :, 0])
    else:
        raise ValueError(kind)
    return case, case[key]


def cli(spec: BundleSpec, files, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(spec.configs / f) for f in files]).replace(" ", ""),
        "--meta_file",
        str(spec.configs / "metadata.json"),
        "--logging_file",
        str(spec.configs / "logging.conf"),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=300)


def collated(output):
    """A trainer's decollated ``state.output`` (one dict per sample) as one batched dict (scalars once)."""
    if isinstance(output, dict):
        return output
    out = {}
    for key in output[0]:
        values = [item[key] for item in output]
        first = values[0]
        out[key] = torch.stack(values) if torch.is_tensor(first) and first.ndim > 0 else first
    return out
