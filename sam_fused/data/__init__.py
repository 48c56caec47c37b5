"""Demo data: the BasicMotions set shipped with the package, and loaders for users' own data.

* `load_basic_motions()`: 40 train / 40 test windows of 100 steps x 6 channels (3-D
  accelerometer + gyroscope of a smart watch), 4 activities. See README.md here for source
  and licence.
* `load_npy_folder(folder)`: the preprocessed HAR layout (x_train.npy [N,T,M], y_train.npy, ...).
* `load_ts(path)`: one sktime/UEA ``.ts`` classification file.
"""
from __future__ import annotations

from importlib import resources

from .dataset import HARDataset, check_same_window
from .npy_layout import load_npy_folder
from .ts_format import load_ts

__all__ = ["HARDataset", "load_basic_motions", "load_npy_folder", "load_ts", "load_ts_split"]


def load_ts_split(train_path, test_path, name: str | None = None) -> HARDataset:
    """A dataset from a train and a test ``.ts`` file with the same classes and window."""
    x_train, y_train, names = load_ts(train_path)
    x_test, y_test, test_names = load_ts(test_path)
    if test_names != names:
        raise ValueError(f"{test_path}: @classLabel {list(test_names)} differs from {train_path}'s {list(names)}")
    check_same_window(x_train, x_test, train_path, test_path)
    return HARDataset(name or str(train_path), x_train, y_train, x_test, y_test, names)


def load_basic_motions() -> HARDataset:
    """The BasicMotions set shipped inside the package (no download)."""
    files = resources.files(__name__)
    with resources.as_file(files / "BasicMotions_TRAIN.ts") as train, \
            resources.as_file(files / "BasicMotions_TEST.ts") as test:
        return load_ts_split(train, test, name="BasicMotions")
