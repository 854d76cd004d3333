from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
CE_BUNDLES = ("amcgan_contrast_mri", "hrfcn_contrast_t1")


def _row(report: str, key: str) -> list[float]:
    line = next(row for row in report.splitlines() if row.startswith(f"| {key} |"))
    return [float(v) for v in line.strip("|").split("|")[1:]]


def _tiny_overrides(tmp_path: Path, names) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.bundles.contract import BUNDLES

    # the contract's tiny settings, validated every epoch so that one epoch writes the model evaluate.json loads
    tiny = {s.name: {**s.tiny, **s.tiny_train, "val_interval": 1} for s in BUNDLES if s.name in names}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny))
    return path


def test_data_only_report(tiny_phantom, tmp_path):
    run_demo = load_script("run_demo")
    out = tmp_path / "out"
    assert (
        run_demo.main(
            ["--data_dir", tiny_phantom, "--out", str(out), "--num_subjects", "6", "--shape", "32,40,24", "--bundles"]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    assert "6 subjects (3 training / 1 validation / 2 test)" in report
    assert "No bundle is present yet: only the data was generated" in report and "## Leaderboard" not in report
    csf, gm, wm, enh = _row(report, "t1")
    assert wm > gm > csf  # T1-weighted contrast
    t2 = _row(report, "t2")
    assert t2[0] == max(t2[:3])  # CSF brightest in T2
    flair = _row(report, "flair")
    assert flair[0] == min(flair[:3])  # CSF darkest in FLAIR
    assert _row(report, "t1ce")[3] > enh  # enhancement only after contrast
    assert (out / "data_montage.png").stat().st_size > 1000


def _table(report: str, task: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and ``{row name: cells}`` of the leaderboard table of ``task``."""
    block = report.split(f"(`{task}`)", 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, {c[0]: c for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[2:])}


def _mean_std(cell: str) -> tuple[float, float]:
    mean, std = (float(v) for v in cell.split(" ± "))
    return mean, std


@pytest.mark.parametrize("names", [CE_BUNDLES])
def test_leaderboard_of_tiny_runs(tiny_phantom, tmp_path, names):
    """Two tiny CE bundles trained and evaluated in-process: one T1 -> CE-T1 table with both rows and baselines."""
    run_demo = load_script("run_demo")
    out = tmp_path / "out"
    ablations = tmp_path / "abl"
    ablations.mkdir()
    fake = {  # an ablation table as run_ablations.py writes it (values made up: only the joining is tested)
        "bundle": "amcgan_contrast_mri",
        "data_dir": tiny_phantom,
        "rows": [
            {
                "row": "pix2pix",
                "configs": ["train.json", "demo.json", "ablations/pix2pix.json"],
                "seeds": [0, 1],
                "n_cases": 2,
                "metrics": {"psnr_brain": {"mean": 12.5, "std": 0.25, "count": 2}},
            }
        ],
    }
    (ablations / "ablations_amcgan_contrast_mri.json").write_text(json.dumps(fake))
    argv = ["--data_dir", tiny_phantom, "--out", str(out), "--num_subjects", "6", "--shape", "32,40,24"]
    argv += ["--overrides", str(_tiny_overrides(tmp_path, names)), "--ablations", str(ablations), "--bundles", *names]
    assert run_demo.main(argv) == 0
    report = (out / "report.md").read_text()
    board = json.loads((out / "leaderboard.json").read_text())
    assert list(board) == ["t1_to_t1ce"]  # both bundles' metadata say synthesis_task t1_to_t1ce
    header, rows = _table(report, "t1_to_t1ce")
    assert header[:3] == ["row", "data", "cases"] and "enhancement_recovery" in header and "psnr_brain" in header
    fitted = next(k for k in rows if k.startswith("identity (t1 fitted"))
    assert any(k.startswith("identity (t1 copied") for k in rows)  # the fit is not (1, 0): raw row kept
    for name in names:  # table numbers = the bundles' own evaluation summaries, parsed back
        summary = json.loads((out / name / "eval" / "summary.json").read_text())["metrics"]
        cells = rows[f"`{name}` default (demo.json)"]
        assert cells[2] == "2"
        for column in ("psnr_brain", "mae_brain", "enhancement_recovery", "false_enhancement"):
            mean, std = _mean_std(cells[header.index(column)])
            assert mean == pytest.approx(summary[column]["mean"], rel=1e-3)
            assert std == pytest.approx(summary[column]["std"], rel=0.05, abs=1e-3)  # 2 significant digits
    ablation = rows["`amcgan_contrast_mri` pix2pix (2 seeds, ablation) (± over seeds)"]
    assert _mean_std(ablation[header.index("psnr_brain")]) == (12.5, 0.25)
    baseline = json.loads((out / "baselines" / f"t1_to_t1ce_{Path(tiny_phantom).name}" / "baseline.json").read_text())
    base_summary = baseline["rows"][0]["summary"]["metrics"]
    assert _mean_std(rows[fitted][header.index("psnr_brain")])[0] == pytest.approx(
        base_summary["psnr_brain"]["mean"], rel=1e-3
    )
    # each bundle's first results line compares its default row with the best baseline, with the numbers
    for name in names:
        first = report.split(f"\n## {name}\n\n", 1)[1].splitlines()[0]
        assert re.match(r"(Beats the baseline|\*\*Loses to the baseline\*\*): `psnr_brain` [-\d.]+ ± ", first), first
        mine = json.loads((out / name / "eval" / "summary.json").read_text())["metrics"]["psnr_brain"]["mean"]
        best = max(r["summary"]["metrics"]["psnr_brain"]["mean"] for r in baseline["rows"])
        assert first.startswith("Beats") == (mine > best)
    # one figure: source | 2 baselines | 2 bundles + 1 ablation row (no prediction: empty tile) | target
    figure = Image.open(out / "figures" / "t1_to_t1ce.png")
    n_tiles = 2 + 3 + 2
    assert figure.size == (n_tiles * (32 + 4) + 4, 40 + 18)
    pixels = np.asarray(figure)
    assert (pixels[..., 0] == 255).sum() > (pixels[..., 1] == 255).sum()  # the red rim outline is drawn


def test_rows_grouped_by_task_with_their_baselines(tiny_phantom, tmp_path):
    """Task from metadata, overridable by a config's ``synthesis_task``; SR gets its bicubic columns as baseline."""
    board = load_script("leaderboard")
    bundles = REPO / "bundles"
    assert board.row_task(bundles / "fagan_super_resolution") == "sr_x4"
    assert board.row_task(bundles / "dual_discriminator_synthesis") == "t1_to_t2"
    task_file = tmp_path / "task_mr_to_ct.json"
    task_file.write_text(json.dumps({"synthesis_task": "mr_to_ct", "target_key": "ct"}))
    assert board.row_task(bundles / "dual_discriminator_synthesis", ["train.json", str(task_file)]) == "mr_to_ct"

    def summary(**means):
        return {"n_cases": 2, "metrics": {k: {"mean": v, "std": 0.5, "count": 2} for k, v in means.items()}}

    rows = [
        board.make_row(
            "default", bundles / "fagan_super_resolution", summary(psnr=30.0, bicubic_psnr=28.0), tiny_phantom
        ),
        board.make_row("default", bundles / "dual_discriminator_synthesis", summary(psnr_brain=21.0), tiny_phantom),
        board.make_row(
            "ct", bundles / "dual_discriminator_synthesis", summary(psnr_brain=9.0), tiny_phantom, [str(task_file)]
        ),
    ]
    lines, result = board.leaderboard(rows, tmp_path / "out", figures=False)
    assert list(result) == ["t1_to_t2", "mr_to_ct", "sr_x4"]  # the collection's task order
    sr = result["sr_x4"]["rows"]
    assert [r["kind"] for r in sr] == ["baseline", "method"] and sr[0]["summary"]["metrics"]["psnr"]["mean"] == 28.0
    assert sr[0]["label"].startswith("bicubic")
    for task, target in (("t1_to_t2", "t2"), ("mr_to_ct", "ct")):
        bases = [r for r in result[task]["rows"] if r["kind"] == "baseline"]
        assert bases and bases[0]["label"].startswith("identity (t1 fitted")
        saved = json.loads(
            (tmp_path / "out" / "baselines" / f"{task}_{Path(tiny_phantom).name}" / "baseline.json").read_text()
        )
        assert saved["target_key"] == target
    text = "\n".join(lines)
    assert "### SR ×4 (`sr_x4`)" in text and "| 30 ± 0.5 |" in text and "| 28 ± 0.5 |" in text
    verdict = board.verdict(rows[1], [r for r in result["t1_to_t2"]["rows"] if r["kind"] == "baseline"])
    best = max(
        b["summary"]["metrics"]["psnr_brain"]["mean"] for b in result["t1_to_t2"]["rows"] if b["kind"] == "baseline"
    )
    assert verdict.startswith("Beats" if 21.0 > best else "**Loses")


@pytest.mark.parametrize(
    "psnr, recovery, start, goal",
    [
        (23.2, 0.6, "**Loses", "met"),  # -0.8 dB, 60 %
        (22.9, 0.6, "**Loses", "missed"),  # -1.1 dB
        (23.5, 0.45, "**Loses", "missed"),  # 45 %
        (24.5, 0.5, "Beats", "met"),
    ],
)
def test_verdict_states_the_enhancement_goal(psnr, recovery, start, goal):
    """Contrast-enhancement rows: recovery >= 50 % and brain PSNR >= the best baseline - 1 dB, said in words."""
    board = load_script("leaderboard")

    def row(kind, **means):
        metrics = {k: {"mean": v, "std": 0.1} for k, v in means.items()}
        return {"task": "t1_to_t1ce", "data_dir": "d", "label": kind, "kind": kind, "summary": {"metrics": metrics}}

    baselines = [row("baseline", psnr_brain=24.0), row("baseline", psnr_brain=23.0)]
    text = board.verdict(row("method", psnr_brain=psnr, enhancement_recovery=recovery), baselines)
    assert text.startswith(start)
    assert f"{psnr - 24.0:+.2f} dB): **{goal}**" in text


def test_super_resolution_figure_shows_the_low_resolution_input_and_bicubic(tiny_phantom, tmp_path):
    """SR figure: the LR input (nearest, blocky) and the bicubic baseline are drawn; a missing output says so."""
    board = load_script("leaderboard")
    target = np.arange(8 * 12 * 3, dtype=np.float32).reshape(8, 12, 3)
    nearest, bicubic = board._low_resolution(target, 4, (0, 1))
    assert nearest.shape == bicubic.shape == target.shape
    assert (nearest[:4, :4] == nearest[0, 0]).all() and not (bicubic[:4, :4] == bicubic[0, 0]).all()
    flat = board._low_resolution(np.full((8, 10, 2), 7.0, np.float32), 4, (0, 1))[1]
    np.testing.assert_allclose(flat[:, :8], 7.0, rtol=1e-6)
    assert (board._low_resolution(np.ones((8, 10, 2), np.float32), 4, (0, 1))[0][:, 8:] == 0).all()  # not a multiple
    method = {"data_dir": tiny_phantom, "pred_dir": None, "bundle": "fagan_super_resolution", "label": "default"}
    bases = [{"label": "bicubic (cases of default)", "method": "bicubic"}]
    path = board.task_figure("sr_x4", bases, [method], tmp_path / "sr.png")
    pixels = np.asarray(Image.open(path).convert("L")).astype(float)
    tiles = [pixels[16:, 4 + i * 36 : 4 + i * 36 + 32] for i in range(4)]  # LR | bicubic | method | target
    assert tiles[0].mean() > 10 and tiles[1].mean() > 10 and tiles[3].mean() > 10
    assert tiles[2].mean() < 5  # no output written: only the "no output" label
    assert abs(tiles[1] - tiles[3]).mean() < abs(tiles[0] - tiles[3]).mean()  # bicubic is closer than the LR blocks
