"""MLflow tracking of the paired-GAN trainer: every loss term reaches a local MLflow store.

MONAI's default ``--tracking mlflow`` settings log ``from_engine(['loss'], first=True)(state.output)``: on the
trainer's batched (``decollate=False``) output dict that is the tuple ``(loss,)``, which MLflow cannot turn into a
float. ``common/engines/mlflow_tracking.json`` logs :func:`common.engines.utils.loss_terms` instead.
MLflow >= 3.13 refuses ``file:`` stores, so the local store is SQLite (as in MONAI's defaults).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

mlflow = pytest.importorskip("mlflow", reason="mlflow is installed on demand (pip install mlflow), not a requirement")

from monai.bundle import ConfigParser, ConfigWorkflow  # noqa: E402
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS  # noqa: E402
from monai.handlers import MLFlowHandler  # noqa: E402
from monai.networks.blocks import Convolution  # noqa: E402
from monai.utils import path_to_sqlite_uri  # noqa: E402

from common.engines.paired_gan import DiscriminatorSpec, PairedGanTrainer  # noqa: E402
from common.engines.utils import loss_terms  # noqa: E402
from common.losses.adversarial import DiscriminatorLoss, PairedGeneratorLoss  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SETTINGS = REPO / "common" / "engines" / "mlflow_tracking.json"
TERMS = {"loss", "g_l1", "g_adv_patch", "d_patch", "d_patch_gp"}


def _data(n: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(1, 1, 8, 8, generator=g), "label": torch.rand(1, 1, 8, 8, generator=g)} for _ in range(n)
    ]


def _trainer(handlers: list, max_epochs: int = 2) -> PairedGanTrainer:
    torch.manual_seed(0)
    g = Convolution(2, 1, 1, kernel_size=3, conv_only=True)
    d = Convolution(2, 2, 1, kernel_size=3, strides=2, conv_only=True)
    spec = DiscriminatorSpec(d, torch.optim.Adam(d.parameters(), 1e-3), DiscriminatorLoss("wasserstein", 1.0, 10.0))
    g_loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": 100.0}, {"patch": 1.0}, "wasserstein")
    return PairedGanTrainer(
        "cpu",
        max_epochs,
        _data(),
        g,
        torch.optim.Adam(g.parameters(), 1e-3),
        g_loss,
        {"patch": spec},
        train_handlers=handlers,
        decollate=False,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One local SQLite store for the module (creating one takes seconds)."""
    return path_to_sqlite_uri(str(tmp_path_factory.mktemp("mlflow") / "mlruns.db"))


def _runs(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_default_output_transform_is_the_root_cause():
    trainer = _trainer([], max_epochs=1)
    trainer.run()
    default = ConfigParser(DEFAULT_MLFLOW_SETTINGS["configs"]["trainer"]).get_parsed_content("output_transform")
    assert isinstance(default(trainer.state.output), tuple)  # float((loss,)) is what crashed at iteration 1
    terms = loss_terms(trainer.state.output)
    assert set(terms) == TERMS and all(isinstance(v, float) for v in terms.values())


def test_handler_logs_every_term_per_iteration(store):
    uri = store
    handler = MLFlowHandler(
        tracking_uri=uri,
        experiment_name="paired_gan",
        iteration_log=True,
        epoch_log=True,
        output_transform=loss_terms,
        tag_name="train_loss",
        close_on_complete=True,
    )
    trainer = _trainer([handler])
    seen: dict[int, dict[str, float]] = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.update({e.state.iteration: loss_terms(e.state.output)})
    )
    trainer.run()
    (run,) = _runs(uri, "paired_gan")
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == TERMS
    client = mlflow.MlflowClient(tracking_uri=uri)
    for key in TERMS:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(it, pytest.approx(seen[it][key], rel=1e-6)) for it in (1, 2, 3, 4)], key


def test_shipped_settings_file_patches_a_bundle_config(tmp_path, store):
    """``--tracking common/engines/mlflow_tracking.json`` on a minimal bundle-shaped config."""
    settings = json.loads(SETTINGS.read_text())
    assert settings["configs"]["trainer"]["output_transform"] == "$common.engines.utils.loss_terms"
    conv = "monai.networks.blocks.Convolution"
    config = {
        "imports": ["$import torch", "$import monai", "$import common", "$import common.engines.utils"],
        "bundle_root": str(tmp_path),
        "output_dir": str(tmp_path / "eval"),
        "tracking_uri": store,  # a config's own tracking_uri / experiment_name win over the settings' defaults
        "experiment_name": "bundle_shaped",
        "gnetwork": {"_target_": conv, "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "conv_only": True},
        "dnetwork": {"_target_": conv, "spatial_dims": 2, "in_channels": 2, "out_channels": 1, "conv_only": True},
        "train": {
            "data": "$[{'image': torch.rand(1, 1, 8, 8), 'label': torch.rand(1, 1, 8, 8)} for _ in range(2)]",
            "discriminators": {
                "patch": {
                    "_target_": "common.engines.paired_gan.DiscriminatorSpec",
                    "network": "@dnetwork",
                    "optimizer": "$torch.optim.Adam(@dnetwork.parameters(), 1e-3)",
                    "loss": {
                        "_target_": "common.losses.adversarial.DiscriminatorLoss",
                        "mode": "wasserstein",
                        "gradient_penalty_weight": 10.0,
                    },
                }
            },
            "g_loss": {
                "_target_": "common.losses.adversarial.PairedGeneratorLoss",
                "pixel_losses": {"l1": "$torch.nn.L1Loss()"},
                "pixel_weights": {"l1": 100.0},
                "adversarial_modes": "wasserstein",
            },
            "handlers": [],
            "trainer": {
                "_target_": "common.engines.paired_gan.PairedGanTrainer",
                "device": "cpu",
                "max_epochs": 2,
                "train_data_loader": "@train#data",
                "g_network": "@gnetwork",
                "g_optimizer": "$torch.optim.Adam(@gnetwork.parameters(), 1e-3)",
                "g_loss": "@train#g_loss",
                "discriminators": "@train#discriminators",
                "train_handlers": "@train#handlers",
                "decollate": True,
            },
        },
        "run": ["$@train#trainer.run()"],
    }
    (tmp_path / "train.json").write_text(json.dumps(config))
    wf = ConfigWorkflow(
        config_file=str(tmp_path / "train.json"), logging_file=False, workflow_type="train", tracking=str(SETTINGS)
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    (run,) = _runs(store, "bundle_shaped")
    assert set(run.data.metrics) == TERMS
    assert run.info.status == "FINISHED"
