"""The tools for a lent GPU machine (tools/device_bundle.py, tools/device_run.sh, the sanitizer
driver): the parts that run without a GPU or a build."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_run_without_a_bundle_says_how_to_make_one(tmp_path):
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "device_run.sh"), "check"], capture_output=True, text=True,
                       env=dict(os.environ, BUNDLE=str(tmp_path), RESULTS=str(tmp_path / "out")))
    assert r.returncode == 2
    assert "device_bundle.py" in r.stderr


def test_device_run_is_valid_bash():
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "device_run.sh")]).returncode == 0


def test_device_bundle_help():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "device_bundle.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--torch" in r.stdout and "--arch" in r.stdout


def test_sanitizer_driver_covers_every_required_plan_feature():
    # the compute-sanitizer driver checks its plan coverage only when run (on a GPU machine, with
    # device minutes counting); --plans-only runs that check here, through the CPU emulation
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_sanitize_driver.py"), "--plans-only"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fwd halo" in r.stdout and "fwd two pass" in r.stdout
