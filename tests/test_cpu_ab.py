"""benchmarks/cpu_ab.py: builds of the library timed side by side, each in its own process."""
import subprocess
import sys
from pathlib import Path

import sam_fused

ROOT = Path(__file__).parents[1]


def test_two_builds_get_a_row_per_shape_case_and_ratio():
    lib = sam_fused._C.__file__
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_ab.py"), f"a={lib}", f"b={lib}",
                          "--shapes", "2,8,5,3;1,3,4,4", "--rounds", "1", "--calls", "2", "--cached"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if " | " in line]
    names = [r.split(" | ")[0].strip() for r in rows]
    assert names == [f"{s} {c}" for s in ("2,8,5,3", "1,3,4,4") for c in ("fwd", "bwd", "clone", "add")] + \
        [f"{s} {c}" for s in ("2,8,5,3", "1,3,4,4") for c in ("fwd/clone", "bwd/add")]
    assert all(" a " in r and " b " in r for r in rows)


def test_the_pointwise_op_in_16_bit_is_timed_against_its_floor():
    lib = sam_fused._C.__file__
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_ab.py"), f"a={lib}", f"b={lib}",
                          "--shapes", "2,8,5,3", "--rounds", "1", "--calls", "2", "--cached", "--op", "pointwise",
                          "--dtype", "bfloat16"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("pointwise op, bfloat16,"), out
    names = [line.split(" | ")[0].strip() for line in out.splitlines() if " | " in line]
    assert names == [f"2,8,5,3 {c}" for c in ("fwd", "bwd", "clone", "add", "fwd/add", "bwd/add")]


def test_a_build_can_plan_for_another_l2():
    lib = sam_fused._C.__file__
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_ab.py"), f"a={lib}", f"b={lib}@3M",
                          "--shapes", "1,3,4,4", "--rounds", "1", "--calls", "2", "--cached"],
                         capture_output=True, text=True, check=True).stdout
    assert ", b 3072 KiB" in out, out


def test_one_build_or_a_missing_file_is_refused():
    script = str(ROOT / "benchmarks" / "cpu_ab.py")
    for args in (["a=" + sam_fused._C.__file__], ["a=/nonexistent.so", "b=/nonexistent.so"]):
        result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
        assert result.returncode == 2 and "name=path" in result.stderr, result.stderr
