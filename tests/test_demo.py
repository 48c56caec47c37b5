"""`python -m sam_fused.demo`: runs end to end, is deterministic with --seed, writes the PNG."""

import os

import numpy as np
import pytest
import torch

from sam_fused import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A small npy-layout data set (two separable classes) so that runs take a fraction of a second."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, 16, 3)) + 2.0 * y[:, None, None]
        np.save(folder / f"x_{split}.npy", x.astype(np.float32))
        np.save(folder / f"y_{split}.npy", np.where(y == 1, "walk", "sit"))
    return folder


def run(folder, out, seed=0, *extra):
    return demo.main(["--data", str(folder), "--epochs", "2", "--batch-size", "4", "--seed", str(seed),
                      "--timing-steps", "1", "--quiet", "--out", str(out), *extra])


def test_same_seed_same_loss_curve(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "save_figure", lambda *args: None)  # plotting is tested below
    first = run(tiny_folder, tmp_path / "a.png")
    again = run(tiny_folder, tmp_path / "b.png")
    other = run(tiny_folder, tmp_path / "c.png", 1)
    assert first["history"] == again["history"]
    assert torch.equal(first["attention_maps"], again["attention_maps"])
    assert first["history"]["train_loss"] != other["history"]["train_loss"]


def test_reports_and_writes_the_figure(tiny_folder, tmp_path, capsys):
    out = tmp_path / "figs" / "demo.png"
    result = run(tiny_folder, out)
    printed = capsys.readouterr().out
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert result["confusion"].sum() == 6 and result["confusion"].shape == (2, 2)
    assert result["accuracy"] == result["confusion"].trace().item() / 6
    assert set(result["step_seconds"]) == {"fused", "reference"}
    # One map per class, over the first block's (T/2) x M grid, values of a sigmoid.
    maps = result["attention_maps"]
    assert maps.shape == (2, 8, 3) and ((maps > 0) & (maps < 1)).all()
    for text in ("test accuracy", "true \\ predicted", "fused", "reference", "speedup", str(out)):
        assert text in printed


def test_attention_maps_are_the_reference_sigmoid_of_the_block_input():
    from sam_fused.models import SANN
    torch.manual_seed(0)
    model = SANN(3, 2).eval()
    x = torch.randn(2, 1, 16, 3)
    with torch.no_grad():
        block_input = model.blocks[0].conv(x)
        conv = model.blocks[0].attention.att_fc[0]
        expected = torch.sigmoid(conv(block_input.mean(1, keepdim=True)))[:, 0]
    torch.testing.assert_close(demo.attention_maps(model, x), expected)


def test_default_data_is_the_shipped_basic_motions(tmp_path, capsys):
    result = demo.main(["--epochs", "1", "--batch-size", "8", "--timing-steps", "1", "--quiet",
                        "--out", str(tmp_path / "demo.png")])
    assert "BasicMotions: 40 train / 40 test windows of 100 steps x 6 channels" in capsys.readouterr().out
    assert result["confusion"].sum() == 40 and (tmp_path / "demo.png").is_file()


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(["--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def _dataset(x_train, x_test):
    from sam_fused.data import HARDataset
    y_train, y_test = np.arange(len(x_train)) % 2, np.arange(len(x_test)) % 2
    return HARDataset("tiny", x_train, y_train, x_test, y_test, ("a", "b"))


def test_standardise_huge_finite_values():
    """Values near 1e20 are finite in float32, but their squares are not: the statistics must
    not overflow (they did, and the demo trained on all-zero inputs)."""
    rng = np.random.default_rng(0)
    x_train, x_test = ((1e20 * (1 + rng.normal(size=(n, 16, 3)))).astype(np.float32) for n in (12, 6))
    train, test = demo.standardise(_dataset(x_train, x_test))
    x64 = x_train.astype(np.float64)
    mean, std = x64.mean(axis=(0, 1), keepdims=True), x64.std(axis=(0, 1), keepdims=True)
    torch.testing.assert_close(train, torch.from_numpy(((x64 - mean) / std).astype(np.float32)))
    torch.testing.assert_close(test, torch.from_numpy(((x_test - mean) / std).astype(np.float32)))


def test_standardise_refuses_a_test_split_beyond_float32():
    x_train = np.ones((4, 8, 2), np.float32)  # constant: std 0
    x_test = np.full((2, 8, 2), 1e35, np.float32)
    with pytest.raises(ValueError, match=r"tiny: x_test standardised .* beyond float32"):
        demo.standardise(_dataset(x_train, x_test))


def test_huge_values_train_like_the_same_data_at_unit_scale(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "save_figure", lambda *args: None)
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        array = np.load(tiny_folder / f"{name}.npy")
        np.save(scaled / f"{name}.npy", array * np.float32(1e20) if name.startswith("x") else array)
    unit, huge = run(tiny_folder, tmp_path / "a.png"), run(scaled, tmp_path / "b.png")
    assert np.isfinite(huge["history"]["train_loss"]).all()
    np.testing.assert_allclose(huge["history"]["train_loss"], unit["history"]["train_loss"], rtol=1e-3)


def _never_trains(monkeypatch):
    def fail(*args):
        raise AssertionError("training started")
    monkeypatch.setattr(demo, "train_step", fail)


def test_out_into_an_uncreatable_folder_fails_before_training(tiny_folder, tmp_path, monkeypatch, capsys):
    _never_trains(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        run(tiny_folder, blocker / "figs" / "demo.png")
    assert f"--out {blocker / 'figs' / 'demo.png'}: cannot create the folder {blocker / 'figs'}: Not a directory" \
        in capsys.readouterr().err


def test_out_naming_a_folder_fails_before_training(tiny_folder, tmp_path, monkeypatch, capsys):
    _never_trains(monkeypatch)
    with pytest.raises(SystemExit):
        run(tiny_folder, tmp_path)
    assert f"--out {tmp_path}: is a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a POSIX user without root's override")
def test_out_into_a_read_only_folder_fails_before_training(tiny_folder, tmp_path, monkeypatch, capsys):
    _never_trains(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit):
            run(tiny_folder, locked / "demo.png")
    finally:
        locked.chmod(0o700)
    assert f"--out {locked / 'demo.png'}: cannot write in {locked}: Permission denied" in capsys.readouterr().err
