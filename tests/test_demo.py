"""`python -m sam_fused.demo`: runs end to end, is deterministic with --seed, writes the PNG."""

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
