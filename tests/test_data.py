"""Data loaders: the shipped BasicMotions set, the .ts reader and the npy folder layout."""
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sam_fused.data import load_basic_motions, load_npy_folder, load_ts, load_ts_split

HEADER = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true sit walk
@data
"""
CASES = "1,2,3:4,5,6:walk\n-1.5,0,2e-1:7,8,9:sit\n"


def write(tmp_path, text, name="tiny.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_basic_motions_is_shipped_and_parsed():
    data = load_basic_motions()
    assert data.x_train.shape == data.x_test.shape == (40, 100, 6)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.class_names == ("Standing", "Running", "Walking", "Badminton")
    assert np.bincount(data.y_train).tolist() == np.bincount(data.y_test).tolist() == [10, 10, 10, 10]
    # Cross-check against the raw text: case 0 is the first data line, dimension d its d-th field.
    text = (resources.files("sam_fused.data") / "BasicMotions_TRAIN.ts").read_text()
    first_case = text.split("@data\n")[1].splitlines()[0].split(":")
    for d in range(6):
        np.testing.assert_array_equal(data.x_train[0, :, d], np.array(first_case[d].split(","), dtype=np.float32))
    assert data.class_names[data.y_train[0]] == first_case[-1]


def test_ts_values_are_time_by_dimension(tmp_path):
    x, y, names = load_ts(write(tmp_path, HEADER + CASES))
    np.testing.assert_array_equal(x, np.array([[[1, 4], [2, 5], [3, 6]], [[-1.5, 7], [0, 8], [0.2, 9]]], np.float32))
    assert y.tolist() == [1, 0] and names == ("sit", "walk")


def test_ts_header_lengths_are_optional(tmp_path):
    text = "@problemName T\n@classLabel true a b\n@data\n1,2:3,4:a\n5,6:7,8:b\n"
    x, y, _ = load_ts(write(tmp_path, text))
    assert x.shape == (2, 2, 2) and y.tolist() == [0, 1]


MALFORMED_TS = {
    "no @data": (HEADER.replace("@data\n", ""), "no @data line"),
    "no cases": (HEADER, "no cases after @data"),
    "no class labels": (HEADER.replace("@classLabel true sit walk", "@classLabel false") + CASES, "@classLabel"),
    "timestamps": (HEADER.replace("@timeStamps false", "@timeStamps true") + CASES, "@timeStamps"),
    "bad number": (HEADER + "1,2,x3:4,5,6:walk\n", r"line 11: dimension 0: 'x3' is not a number"),
    "missing value": (HEADER + "1,?,3:4,5,6:walk\n", r"missing values"),
    "nan": (HEADER + "1,nan,3:4,5,6:walk\n", r"NaN"),
    "ragged dims in a case": (HEADER + "1,2,3:4,5:walk\n", r"line 11: dimension 1 has 2 values, expected 3"),
    "ragged across cases": (HEADER.replace("@seriesLength 3\n", "") + "1,2,3:4,5,6:walk\n1,2:4,5:sit\n",
                            r"line 11: dimension 0 has 2 values, expected 3"),
    "wrong dimension count": (HEADER + "1,2,3:walk\n", r"line 11: case has 1 dimensions, expected 2"),
    "unknown label": (HEADER + "1,2,3:4,5,6:run\n", r"'run' is not in @classLabel"),
    "data before header end": ("@problemName T\n1,2:3,4:a\n@data\n", "data before the @data line"),
    "bad dimensions": (HEADER.replace("@dimensions 2", "@dimensions two") + CASES, "line 6: @dimensions must be"),
    "bad boolean": (HEADER.replace("@univariate false", "@univariate no") + CASES, "line 5: @univariate must be"),
    "repeated class": (HEADER.replace("sit walk", "sit walk sit") + CASES, "line 9: @classLabel repeats"),
}


@pytest.mark.parametrize("case", MALFORMED_TS)
def test_malformed_ts_names_the_file_and_the_problem(tmp_path, case):
    text, message = MALFORMED_TS[case]
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        load_ts(path)


def test_missing_ts_file(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "gone.ts")) + ": file not found"):
        load_ts(tmp_path / "gone.ts")


def test_ts_split_requires_the_same_classes(tmp_path):
    train = write(tmp_path, HEADER + CASES, "train.ts")
    test = write(tmp_path, HEADER.replace("sit walk", "sit run") + "1,2,3:4,5,6:run\n", "test.ts")
    with pytest.raises(ValueError, match=r"test\.ts: @classLabel \['sit', 'run'\] differs"):
        load_ts_split(train, test)


def save_npy_folder(folder, x_train, y_train, x_test, y_test):
    folder.mkdir(exist_ok=True)
    for name, array in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
        np.save(folder / f"{name}.npy", array)
    return folder


def test_npy_folder_maps_labels_to_sorted_indices(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(5, 8, 3)), rng.normal(size=(3, 8, 3))
    folder = save_npy_folder(tmp_path / "har", x_train, np.array([6, 1, 3, 1, 6]), x_test, np.array([3, 3, 1]))
    data = load_npy_folder(folder)
    assert data.name == "har" and data.class_names == ("1", "3", "6")
    assert data.y_train.tolist() == [2, 0, 1, 0, 2] and data.y_test.tolist() == [1, 1, 0]
    assert data.x_train.dtype == np.float32 and data.window == (8, 3)
    np.testing.assert_array_equal(data.x_test, x_test.astype(np.float32))


def test_npy_folder_accepts_string_labels(tmp_path):
    x = np.zeros((2, 4, 2), np.float32)
    data = load_npy_folder(save_npy_folder(tmp_path / "d", x, np.array(["walk", "sit"]), x, np.array(["sit", "sit"])))
    assert data.class_names == ("sit", "walk") and data.y_train.tolist() == [1, 0]


def good_arrays():
    x = np.zeros((4, 10, 3), np.float32)
    return dict(x_train=x, y_train=np.arange(4), x_test=x[:2], y_test=np.arange(2))


MALFORMED_NPY = {
    "x/y length mismatch": ("y_train", np.arange(3), "y_train.npy: has 3 labels but x_train.npy has 4 windows"),
    "x not 3-D": ("x_train", np.zeros((4, 10)), r"x_train.npy: expected windows \[N, T, M\]"),
    "empty windows": ("x_test", np.zeros((0, 10, 3)), r"x_test.npy: expected windows"),
    "one-hot y": ("y_test", np.eye(2), "y_test.npy: expected class labels .*one-hot"),
    "train/test windows differ": ("x_test", np.zeros((2, 12, 3)), "x_test.npy: windows are 12x3"),
    "nan": ("x_train", np.full((4, 10, 3), np.nan), "x_train.npy: contains NaN"),
    "float labels": ("y_train", np.linspace(0, 1, 4), "y_train.npy: labels must be integers or strings"),
    "object array": ("x_train", np.array([np.zeros(3), None], dtype=object),
                     "x_train.npy: cannot load as a .npy array: Object arrays"),
    "mixed label kinds": ("y_test", np.array(["a", "b"]), "y_test.npy: labels are"),
    "one training class": ("y_train", np.full(4, 3), "y_train.npy: every label is 3: training a classifier needs"),
    "bytes labels not UTF-8": ("y_train", np.array([b"\xff", b"a", b"b", b"c"]), "y_train.npy: byte-string labels"),
}


@pytest.mark.parametrize("case", MALFORMED_NPY)
def test_malformed_npy_folder_names_the_file_and_the_problem(tmp_path, case):
    name, array, message = MALFORMED_NPY[case]
    arrays = good_arrays()
    arrays[name] = array
    folder = tmp_path / "d"
    folder.mkdir()
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value, allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape(str(folder)) + "/" + message):
        load_npy_folder(folder)


def test_npy_folder_missing_file_or_folder(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    (folder / "y_test.npy").unlink()
    with pytest.raises(ValueError, match=re.escape(str(folder / "y_test.npy")) + ": file not found"):
        load_npy_folder(folder)
    with pytest.raises(ValueError, match="not a folder"):
        load_npy_folder(tmp_path / "nowhere")


def test_npy_folder_truncated_file(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    (folder / "x_train.npy").write_bytes((folder / "x_train.npy").read_bytes()[:60])
    with pytest.raises(ValueError, match="x_train.npy: cannot load as a .npy array"):
        load_npy_folder(folder)


def test_npz_renamed_npy_names_the_file_and_closes_it(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    path = folder / "x_train.npy"
    with open(path, "wb") as file:  # np.savez on a file object keeps the .npy name
        np.savez(file, x=np.zeros((4, 10, 3)), y=np.arange(4))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": cannot load as a \.npy array: it is an \.npz "
                       r"archive \(of arrays \['x', 'y'\]\)"):
        load_npy_folder(folder)
    fd_dir = Path("/proc/self/fd")
    if fd_dir.is_dir():  # no file handle on it left open
        open_files = []
        for fd in fd_dir.iterdir():
            try:
                open_files.append(os.readlink(fd))
            except OSError:
                pass
        assert str(path) not in open_files


def _write_npy_header(path, shape, descr="<f4", data=b""):
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": descr, "fortran_order": False, "shape": shape})
        file.write(data)


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    path = folder / "x_train.npy"
    _write_npy_header(path, (1_000_000, 1_000_000, 1), data=b"\0" * 480)  # claims 4e12 bytes = 3.64 TiB
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": cannot load as a \.npy array: its header claims "
                       r"shape \(1000000, 1000000, 1\) of float32 \(3\.64 TiB\) but the file holds 480 B"):
        load_npy_folder(folder)


def test_npy_truncated_after_the_header(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    path = folder / "x_test.npy"
    path.write_bytes(path.read_bytes()[:-8])  # 2 x 10 x 3 float32 = 240 bytes, 232 left
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": .*\(240 B\) but the file holds 232 B"):
        load_npy_folder(folder)


def test_npy_that_is_not_npy_at_all(tmp_path):
    folder = save_npy_folder(tmp_path / "d", **good_arrays())
    (folder / "y_train.npy").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match=r"y_train\.npy: cannot load as a \.npy array: .*magic string"):
        load_npy_folder(folder)


def test_npy_values_beyond_float32(tmp_path):
    arrays = good_arrays()
    arrays["x_test"] = np.full((2, 10, 3), 1e39)  # finite in float64, inf in float32
    folder = save_npy_folder(tmp_path / "d", **arrays)
    with pytest.raises(ValueError, match=r"x_test\.npy: values up to 1e\+39 exceed the float32 range"):
        load_npy_folder(folder)


def test_ts_with_a_byte_order_mark_parses_like_without(tmp_path):
    plain = load_ts(write(tmp_path, HEADER + CASES, "plain.ts"))
    bom = tmp_path / "bom.ts"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + CASES).encode())
    with_bom = load_ts(bom)
    np.testing.assert_array_equal(with_bom[0], plain[0])
    np.testing.assert_array_equal(with_bom[1], plain[1])
    assert with_bom[2] == plain[2]


def test_ts_values_beyond_float32(tmp_path):
    path = write(tmp_path, HEADER + "1,2,3:4,5e38,6:walk\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": line 11: dimension 1: 5e\+38 exceeds the float32"):
        load_ts(path)


def test_npy_folder_accepts_byte_string_labels_and_names_the_folder_it_is(tmp_path, monkeypatch):
    x = np.zeros((2, 4, 2), np.float32)
    folder = save_npy_folder(tmp_path / "har", x, np.array([b"walk", b"sit"]), x, np.array([b"sit", b"sit"]))
    monkeypatch.chdir(folder)
    data = load_npy_folder(".")
    assert data.name == "har" and data.class_names == ("sit", "walk") and data.y_train.tolist() == [1, 0]
