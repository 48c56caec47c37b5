"""The in-memory form every loader returns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HARDataset:
    """A train/test split of sensor windows.

    x_train, x_test: float32 ``[N, T, M]`` (windows of T time steps of M channels).
    y_train, y_test: int64 ``[N]`` indices into ``class_names``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def window(self) -> tuple[int, int]:
        """(T, M): time steps and channels of one window."""
        return self.x_train.shape[1], self.x_train.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_same_window(x_train, x_test, train_name, test_name):
    """Train and test windows must have the same (T, M) for one model to take both."""
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{test_name}: windows are {x_test.shape[1]}x{x_test.shape[2]} (T x M) but "
                         f"{train_name} has {x_train.shape[1]}x{x_train.shape[2]}")
