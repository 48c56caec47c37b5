"""Reader for the sktime / UEA ``.ts`` format: multivariate, equal-length, class-labelled.

A file is ``#`` comment lines, ``@`` header lines up to ``@data``, then one case per line:
the dimensions separated by ``:``, the values of a dimension by ``,``, the class label last::

    @problemName BasicMotions
    @univariate false
    @dimensions 6
    @classLabel true Standing Running Walking Badminton
    @data
    0.07,0.08,...:0.39,0.39,...:...:Standing

Time-stamped values, missing values (``?``), unequal lengths and regression targets are not
supported: such files are rejected with a ValueError naming the file, like any malformed one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _Reader:
    """Line-numbered access to one file, with errors that name it."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            # utf-8-sig: files saved by Windows editors start with a byte order mark
            self.lines = self.path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise ValueError(f"{self.path}: file not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.path}: cannot read as UTF-8 text ({error})") from None

    def fail(self, lineno, message):
        where = f"{self.path}: line {lineno}" if lineno else f"{self.path}"
        raise ValueError(f"{where}: {message}")


def _parse_bool(reader, lineno, name, words):
    if len(words) < 1 or words[0].lower() not in ("true", "false"):
        reader.fail(lineno, f"{name} must be followed by true or false")
    return words[0].lower() == "true"


def _parse_header(reader):
    """Header fields up to @data; returns (header dict, index of the first data line)."""
    header = {}
    for index, raw in enumerate(reader.lines):
        lineno, line = index + 1, raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            reader.fail(lineno, "data before the @data line")
        name, *words = line.split()
        tag = name.lower()
        if tag == "@data":
            return header, index + 1
        if tag in ("@timestamps", "@missing", "@univariate", "@equallength"):
            header[tag] = _parse_bool(reader, lineno, name, words)
        elif tag in ("@dimensions", "@serieslength"):
            if len(words) != 1 or not words[0].isdigit() or int(words[0]) < 1:
                reader.fail(lineno, f"{name} must be followed by a positive integer")
            header[tag] = int(words[0])
        elif tag == "@classlabel":
            if not _parse_bool(reader, lineno, name, words) or len(words) < 2:
                reader.fail(lineno, "@classLabel must be 'true' followed by the class names")
            if len(set(words[1:])) != len(words) - 1:
                reader.fail(lineno, f"@classLabel repeats a class name: {words[1:]}")
            header[tag] = tuple(words[1:])
        elif tag == "@targetlabel":
            reader.fail(lineno, "regression files (@targetLabel) are not supported, need @classLabel")
        # Other tags (@problemName, ...) carry nothing the loader needs.
    reader.fail(0, "no @data line: the header must end with @data before the cases")


def _check_supported(reader, header):
    if header.get("@timestamps", False):
        reader.fail(0, "@timeStamps true is not supported (need plain comma-separated values)")
    if "@classlabel" not in header:
        reader.fail(0, "no '@classLabel true <names...>' header line: class labels are required")
    if header.get("@univariate") and header.get("@dimensions", 1) != 1:
        reader.fail(0, "@univariate true contradicts @dimensions > 1")


def _parse_dimension(reader, lineno, dim, text):
    values = text.split(",")
    try:
        series = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        if bad.strip() == "?":
            reader.fail(lineno, f"dimension {dim}: missing values ('?') are not supported")
        reader.fail(lineno, f"dimension {dim}: {bad.strip()!r} is not a number")
    if not np.isfinite(series).all():
        reader.fail(lineno, f"dimension {dim}: NaN or infinite values are not supported")
    with np.errstate(over="ignore"):
        in_float32 = np.isfinite(series.astype(np.float32)).all()
    if not in_float32:
        reader.fail(lineno, f"dimension {dim}: {np.abs(series).max():.3g} exceeds the float32 range "
                            f"(+-{_FLOAT32_MAX:.3g}) the loader returns")
    return series


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_ts(path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Load a ``.ts`` classification file.

    Returns ``x`` float32 ``[N, T, M]`` (time steps by dimensions), ``y`` int64 ``[N]`` indices
    into ``class_names``, and ``class_names`` in the order of the ``@classLabel`` header.
    Raises ValueError naming the file (and line) for anything malformed or unsupported.
    """
    reader = _Reader(path)
    header, first = _parse_header(reader)
    _check_supported(reader, header)
    class_names = header["@classlabel"]
    label_index = {name: i for i, name in enumerate(class_names)}
    n_dims = 1 if header.get("@univariate") else header.get("@dimensions")
    length = header.get("@serieslength")
    cases, labels = [], []
    for index in range(first, len(reader.lines)):
        lineno, line = index + 1, reader.lines[index].strip()
        if not line or line.startswith("#"):
            continue
        *dims, label = line.split(":")
        if not dims:
            reader.fail(lineno, "expected dimensions separated by ':' followed by ':<class label>'")
        n_dims = n_dims or len(dims)
        if len(dims) != n_dims:
            reader.fail(lineno, f"case has {len(dims)} dimensions, expected {n_dims}")
        series = [_parse_dimension(reader, lineno, d, text) for d, text in enumerate(dims)]
        length = length or len(series[0])
        for d, values in enumerate(series):
            if len(values) != length:
                reader.fail(lineno, f"dimension {d} has {len(values)} values, expected {length} "
                                    "(unequal lengths are not supported)")
        if label.strip() not in label_index:
            reader.fail(lineno, f"class label {label.strip()!r} is not in @classLabel {list(class_names)}")
        cases.append(np.stack(series, axis=1))  # [T, M]
        labels.append(label_index[label.strip()])
    if not cases:
        reader.fail(0, "no cases after @data")
    return np.stack(cases).astype(np.float32), np.array(labels, dtype=np.int64), class_names
