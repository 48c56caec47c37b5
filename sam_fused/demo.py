"""Train the SANN HAR network with fused spatial attention on real sensor data.

    python -m sam_fused.demo                      # BasicMotions, shipped with the package
    python -m sam_fused.demo --data DIR           # your x_train.npy / y_train.npy / x_test.npy / y_test.npy

Prints a progress bar, the test accuracy, the confusion matrix and the time of one training
step with the fused layer vs the eager reference layer (same weights, same batch, same run),
and saves a PNG with the training curves and the attention maps ``s`` of a few test windows.
Recipe of docs/design.md §7 (AdamW, lr 5e-4, weight decay 1e-3, batch 128, cross-entropy) with
fewer epochs, enough for BasicMotions, and smaller batches for small training sets.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import HARDataset, load_basic_motions, load_npy_folder
from .models import SANN
from .ops import spatial_attention


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sam_fused.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", metavar="DIR", help="folder with x_train.npy, y_train.npy, x_test.npy, "
                        "y_test.npy (default: the BasicMotions set shipped with the package)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, help="default: 128 (docs/design.md §7), less for small training "
                        "sets so that an epoch has at least 5 steps: BatchNorm's running statistics, which "
                        "evaluation uses, need tens of steps to settle")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-steps", type=int, default=5,
                        help="training steps timed for each of fused and reference (default: 5)")
    parser.add_argument("--out", default="sann_demo.png", help="PNG to write (default: sann_demo.png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "timing_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    problem = unwritable(args.out)
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    return args


def unwritable(path) -> str | None:
    """Why a file cannot be written at `path` (None if it can), found before training rather
    than after: creates its folder and a temporary file there."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, need a file name"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder {error.filename or path.parent}: {error.strerror or error}"
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        return f"cannot write in {path.parent}: {error.strerror or error}"
    return None


def standardise(data: HARDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel zero mean / unit variance with the training set's statistics, computed in
    float64 (in float32 the squares of values beyond ~1e19 overflow); returns float32."""
    x_train, x_test = data.x_train.astype(np.float64), data.x_test.astype(np.float64)
    mean = x_train.mean(axis=(0, 1), keepdims=True)
    std = x_train.std(axis=(0, 1), keepdims=True) + 1e-6
    train, test = ((x - mean) / std for x in (x_train, x_test))
    with np.errstate(over="ignore"):  # checked next
        test32 = test.astype(np.float32)
    if not np.isfinite(test32).all():  # train z-scores are at most sqrt(N*T): only test can overflow
        raise ValueError(f"{data.name}: x_test standardised with x_train's per-channel mean and std reaches "
                         f"{np.abs(test).max():.3g}, beyond float32: do the splits hold the same kind of data?")
    return torch.from_numpy(train.astype(np.float32)), torch.from_numpy(test32)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """One forward + backward + optimizer step; returns (loss, number correct) as tensors."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(1) == y).sum()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    return torch.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).view(num_classes, num_classes)


def format_confusion(matrix: torch.Tensor, class_names) -> str:
    width = max(6, *(len(n) for n in class_names)) + 1
    lines = ["true \\ predicted".ljust(width) + "".join(n[:width - 1].rjust(width) for n in class_names)]
    for name, row in zip(class_names, matrix.tolist()):
        lines.append(name.ljust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_step_times(models: dict, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> dict:
    """Median seconds per training step of each model on the same batch.

    Steps alternate between the models so that load changes on a shared machine hit all of
    them alike; one untimed warm-up step each first.
    """
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=lr) for name, m in models.items()}
    times = {name: [] for name in models}
    for step in range(steps + 1):
        for name, model in models.items():
            model.train()
            _sync(x.device)
            start = time.perf_counter()
            train_step(model, optimizers[name], x, y)
            _sync(x.device)
            if step:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def attention_maps(model: SANN, x: torch.Tensor, block: int = 0) -> torch.Tensor:
    """The attention map ``s`` ``[N, H, W]`` that block `block`'s spatial attention applies to
    `x`'s windows: its input is captured with a forward hook, then the fused op is run on it
    with the module's own weights and ``return_map=True``."""
    module = model.blocks[block].attention
    captured = []
    handle = module.register_forward_hook(lambda mod, inputs, output: captured.append(inputs[0]))
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
    conv = module.att_fc[0]
    return spatial_attention(captured[0], conv.weight, conv.bias, "mean", return_map=True)[:, 0]


def one_window_per_class(y: torch.Tensor, limit: int = 4) -> list[int]:
    firsts = {}
    for i, label in enumerate(y.tolist()):
        firsts.setdefault(label, i)
    return sorted(firsts.values())[:limit]


def save_figure(path, history, windows, maps, titles):
    """Loss/accuracy curves on top, then each window's input and attention map (channel x time)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(windows)
    fig = plt.figure(figsize=(3.2 * max(n, 2), 9), constrained_layout=True)
    grid = fig.add_gridspec(3, max(n, 2) * 2)
    epochs = range(1, len(history["train_loss"]) + 1)
    for col, (metric, label) in enumerate((("loss", "cross-entropy"), ("acc", "accuracy"))):
        ax = fig.add_subplot(grid[0, col * max(n, 2):(col + 1) * max(n, 2)])
        ax.plot(epochs, history[f"train_{metric}"], label="train")
        ax.plot(epochs, history[f"test_{metric}"], label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    for i, (window, s, title) in enumerate(zip(windows, maps, titles)):
        limit = window.abs().max().item()  # input centred on 0 (blue below, red above)
        for row, (image, what, style) in enumerate((
                (window, "input (standardised)", dict(cmap="coolwarm", vmin=-limit, vmax=limit)),
                (s, "attention s, block 1", dict(cmap="viridis"))), start=1):
            ax = fig.add_subplot(grid[row, 2 * i:2 * i + 2])
            shown = ax.imshow(image.T.numpy(), aspect="auto", origin="lower", interpolation="nearest", **style)
            ax.set_title(f"{title}\n{what}" if row == 1 else what, fontsize=9)
            ax.set_xlabel("time step" if row == 1 else "time step / 2")
            ax.set_ylabel("channel")
            fig.colorbar(shown, ax=ax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    """Run the demo; returns what it printed as numbers (for tests and notebooks)."""
    import matplotlib  # noqa: F401  (the figure is drawn after training: fail before it if absent)
    from tqdm import tqdm

    args = parse_args(argv)
    device = torch.device(args.device)
    data = load_npy_folder(args.data) if args.data else load_basic_motions()
    x_train, x_test = (t.to(device) for t in standardise(data))
    y_train, y_test = (torch.from_numpy(y).to(device) for y in (data.y_train, data.y_test))
    (T, M), K = data.window, data.num_classes
    args.batch_size = args.batch_size or min(128, -(-len(x_train) // 5))
    print(f"{data.name}: {len(x_train)} train / {len(x_test)} test windows of {T} steps x {M} channels, "
          f"{K} classes {list(data.class_names)}")

    torch.manual_seed(args.seed)
    shuffle = torch.Generator().manual_seed(args.seed)

    def build(attention):
        return SANN(M, K, attention=attention).to(device)

    model = build("fused")
    print(f"SANN (fused attention), {sum(p.numel() for p in model.parameters()):,} parameters, on {device}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    history = {key: [] for key in ("train_loss", "train_acc", "test_loss", "test_acc")}
    start = time.perf_counter()
    progress = tqdm(range(args.epochs), desc="training", unit="epoch", disable=args.quiet)
    for _ in progress:
        model.train()
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        for batch in torch.randperm(len(x_train), generator=shuffle).to(device).split(args.batch_size):
            loss, hits = train_step(model, optimizer, x_train[batch], y_train[batch])
            loss_sum += loss * len(batch)
            correct += hits
        logits = predict(model, x_test, args.batch_size)
        history["train_loss"].append(loss_sum.item() / len(x_train))
        history["train_acc"].append(correct.item() / len(x_train))
        history["test_loss"].append(nn.functional.cross_entropy(logits, y_test).item())
        history["test_acc"].append((logits.argmax(1) == y_test).float().mean().item())
        progress.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", acc=f"{history['train_acc'][-1]:.2f}",
                             test_acc=f"{history['test_acc'][-1]:.2f}")
    train_seconds = time.perf_counter() - start

    predicted = predict(model, x_test, args.batch_size).argmax(1)
    accuracy = (predicted == y_test).float().mean().item()
    matrix = confusion_matrix(y_test.cpu(), predicted.cpu(), K)
    print(f"\ntrained {args.epochs} epochs in {train_seconds:.1f} s; test accuracy {accuracy:.1%} "
          f"({int((predicted == y_test).sum())}/{len(y_test)}; chance {1 / K:.0%})")
    print(format_confusion(matrix, data.class_names))

    # Same weights in both variants: the fused checkpoint loads strict into the reference model.
    reference = build("reference")
    reference.load_state_dict(model.state_dict())
    batch = torch.arange(min(args.batch_size, len(x_train)), device=device)
    step = compare_step_times({"fused": copy.deepcopy(model), "reference": reference},
                              x_train[batch], y_train[batch], args.lr, args.timing_steps)
    print(f"\ntraining step, batch {len(batch)} x 1 x {T} x {M} on {device} (median of {args.timing_steps}): "
          f"fused {step['fused'] * 1e3:.1f} ms, reference {step['reference'] * 1e3:.1f} ms, "
          f"speedup {step['reference'] / step['fused']:.2f}x")

    shown = one_window_per_class(y_test)
    maps = attention_maps(model, x_test[shown]).cpu()
    titles = [f"test #{i}: {data.class_names[y_test[i]]} -> {data.class_names[predicted[i]]}" for i in shown]
    save_figure(args.out, history, x_test[shown].cpu(), maps, titles)
    print(f"saved {args.out}")
    return {"history": history, "accuracy": accuracy, "confusion": matrix, "step_seconds": step,
            "train_seconds": train_seconds, "attention_maps": maps}


if __name__ == "__main__":
    main()
