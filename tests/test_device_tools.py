"""The tools that carry a prebuilt extension to a lent GPU machine (tools/device_bundle.py,
tools/device_run.sh): the parts that run without a GPU or a build."""
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
