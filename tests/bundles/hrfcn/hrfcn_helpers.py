"""Helpers of the HR-FCN bundle tests: in-process workflows, datalists, a constant network, geometry checks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

__all__ = [
    "REPO",
    "CONFIGS",
    "TINY",
    "INFER_KEYS",
    "_workflow",
    "_infer_overrides",
    "_abs_case",
    "_write_datalist",
    "_state",
    "_same_state",
    "ConstantNet",
    "_run_inference",
    "_output",
    "_assert_same_geometry",
    "_input_data_error",
    "_Messages",
    "_constant_cascade_models",
]


REPO = Path(__file__).resolve().parents[3]


CONFIGS = REPO / "bundles" / "hrfcn_contrast_t1" / "configs"


TINY = {
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
}


INFER_KEYS = ("stem_width", "channels", "num_res_blocks", "sw_batch_size")


def _workflow(configs, workflow_type: str = "train", **overrides):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )


def _infer_overrides(root: Path, datalist: Path | str, model: Path, **extra) -> dict:
    out = {k: TINY[k] for k in INFER_KEYS}
    out.update(bundle_root=str(root), datalist=str(datalist), output_dir=str(root / "out"), ckpt_path=str(model))
    out.update(extra)
    return out


def _abs_case(root: str, case: dict) -> dict:
    return {k: (v if k == "subject" else os.path.join(root, v)) for k, v in case.items()}


def _write_datalist(path: Path, **splits) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits))
    return path


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


class ConstantNet(torch.nn.Module):
    """``(B, C, *spatial) -> (B, 1, *spatial)`` filled with ``value``; records the inputs it saw."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.full_like(x[:, :1], self.value)


def _run_inference(configs, overrides: dict, network: torch.nn.Module | None = None):
    wf = _workflow(configs, workflow_type="infer", **overrides)
    wf.initialize()
    if network is not None:
        wf.parser.get_parsed_content("evaluator").network = network
    wf.run()
    wf.finalize()
    return wf


def _output(root: Path, case: str) -> Path:
    return root / "out" / case / f"{case}_t1ce_synth.nii.gz"


def _assert_same_geometry(out_path: Path, ref_path: str) -> np.ndarray:
    out, ref = nib.load(out_path), nib.load(ref_path)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    data = np.asarray(out.dataobj, dtype=np.float64)
    assert np.isfinite(data).all()
    return data


def _input_data_error(err: BaseException | None) -> Exception:
    """The ``InputDataError`` in the cause/context chain of ``err`` (MONAI wraps it in a RuntimeError)."""
    from common.data import InputDataError

    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    error = next((e for e in chain if isinstance(e, InputDataError)), None)
    assert error is not None, f"no InputDataError in {[type(e).__name__ for e in chain]}"
    return error


class _Messages(logging.Handler):
    """Collects the messages of one logger (``fileConfig`` in ConfigWorkflow replaces pytest's root handler)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self)
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self.messages

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)


def _constant_cascade_models(root: Path) -> dict:
    """T1 -> T2 and T1 -> ADC HR-FCNs whose output is a known constant (0.25, 0.5): the last conv's bias."""
    from common.networks import HRFCN

    paths = {}
    for name, value in {"t1_to_t2": 0.25, "t1_to_adc": 0.5}.items():
        net = HRFCN(
            3,
            1,
            1,
            stem_channels=TINY["stem_width"],
            channels=TINY["channels"],
            strides=(2, 2, 1),
            num_res_blocks=TINY["num_res_blocks"],
        )
        with torch.no_grad():
            net.head[-1].conv.weight.zero_()
            net.head[-1].conv.bias.fill_(value)
        (root / "models" / name).mkdir(parents=True)
        torch.save(net.state_dict(), root / "models" / name / "model.pt")
        paths[name] = root / "models" / name / "model.pt"
    return paths
