"""Loader for the common preprocessed HAR layout: a folder holding

    x_train.npy  [N, T, M]  windows (T time steps, M sensor channels), any real dtype
    y_train.npy  [N]        class labels: integers (e.g. 1..6) or strings
    x_test.npy   [N', T, M]
    y_test.npy   [N']

UCI-HAR, PAMAP2, OPPORTUNITY, ... preprocessed into windows are commonly saved like this.
Labels are mapped to 0..K-1 in sorted order of the distinct labels of both splits; the
original labels become the class names.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .dataset import HARDataset, check_same_window

FILES = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy")


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # how np.load tells an .npz archive


def _size(n_bytes: int) -> str:
    """`n_bytes` in B, KiB, ... TiB."""
    unit = 0
    while n_bytes >= 1024 and unit < 4:
        n_bytes, unit = n_bytes / 1024, unit + 1
    return f"{n_bytes:.3g} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[unit]}"


def _check_header(path: Path, file):
    """Refuse an .npz archive and a header claiming more data than the file holds, before
    numpy allocates the array (a corrupt header can claim terabytes). Raises ValueError."""
    start = file.read(len(_ZIP_MAGIC[0]))
    if start in _ZIP_MAGIC:
        with np.load(path, allow_pickle=False) as archive:  # closes the archive's file handle
            names = archive.files
        raise ValueError(f"it is an .npz archive (of arrays {names}): save each array on its own with np.save")
    file.seek(0)
    version = np.lib.format.read_magic(file)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(file)
    if dtype.hasobject:
        return  # pickled items: np.load refuses them with its own message
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = path.stat().st_size - file.tell()
    if claimed > available:
        raise ValueError(f"its header claims shape {shape} of {dtype} ({_size(claimed)}) but the file holds "
                         f"{_size(available)} of data (truncated or corrupt)")


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: file not found (the folder must hold {', '.join(FILES)})")
    try:
        with open(path, "rb") as file:
            _check_header(path, file)
        return np.load(path, allow_pickle=False)  # object arrays would need unpickling: refused
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise ValueError(f"{path}: cannot load as a .npy array: {error}") from None


def _check_windows(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{path}: expected windows [N, T, M] with N, T, M >= 1, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{path}: expected real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    with np.errstate(over="ignore"):  # overflow to inf is checked next
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError(f"{path}: values up to {np.abs(x).max():.3g} exceed the float32 range "
                         f"(+-{np.finfo(np.float32).max:.3g}) the model computes in")
    return x32


def _check_labels(y: np.ndarray, path: Path, n: int, x_path: Path) -> np.ndarray:
    if y.ndim != 1:
        hint = " (one-hot labels? save y.argmax(1) instead)" if y.ndim == 2 else ""
        raise ValueError(f"{path}: expected class labels [N], got shape {y.shape}{hint}")
    if len(y) != n:
        raise ValueError(f"{path}: has {len(y)} labels but {x_path.name} has {n} windows")
    if y.dtype.kind == "S":  # byte strings (e.g. saved from Python 2 or h5py): decode
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: byte-string labels are not UTF-8 ({error})") from None
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "U"):
        raise ValueError(f"{path}: labels must be integers or strings, got dtype {y.dtype}")
    return y


def load_npy_folder(folder) -> HARDataset:
    """Load ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy`` from `folder`.

    Raises ValueError naming the file and what is wrong (missing, not a .npy array, a header
    claiming more data than the file holds, wrong shape or dtype, x/y length mismatch, NaN or
    values beyond float32, a single training class, train/test window mismatch).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (expected one holding {', '.join(FILES)})")
    paths = [folder / name for name in FILES]
    x_train_path, y_train_path, x_test_path, y_test_path = paths
    x_train = _check_windows(_load_array(x_train_path), x_train_path)
    x_test = _check_windows(_load_array(x_test_path), x_test_path)
    check_same_window(x_train, x_test, x_train_path, x_test_path)
    y_train = _check_labels(_load_array(y_train_path), y_train_path, len(x_train), x_train_path)
    y_test = _check_labels(_load_array(y_test_path), y_test_path, len(x_test), x_test_path)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{y_train_path}: every label is {y_train[0].item()!r}: training a classifier needs "
                         "at least 2 classes")
    if (y_train.dtype.kind == "U") != (y_test.dtype.kind == "U"):
        raise ValueError(f"{y_test_path}: labels are {y_test.dtype} but {y_train_path.name} has {y_train.dtype}")
    labels, codes = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return HARDataset(folder.resolve().name, x_train, codes[:len(y_train)], x_test, codes[len(y_train):],
                      tuple(str(label) for label in labels))
