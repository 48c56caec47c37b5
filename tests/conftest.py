"""Fixtures of the sam_fused tests (plain helpers live in tests/helpers.py)."""
import os

import pytest
import torch

try:
    from hypothesis import settings
except ImportError:  # a GPU machine without it still runs every test but the property tests
    settings = None

# Property tests: bounded, no per-example deadline (the first call of a shape can be slow on a
# loaded 2-core machine), reproducible in CI, and no example database written to the tree.
if settings is not None:
    settings.register_profile("sam_fused", max_examples=150, deadline=None, derandomize=True, database=None)
    settings.load_profile("sam_fused")

# Tests run torch single-threaded unless SAM_FUSED_TEST_THREADS says otherwise: on a loaded
# 2-core machine OpenMP's waiting threads make every small op about 10x slower. The CPU kernels
# cut their work from the shape alone, never from the thread count, and test_determinism checks
# that 1 and 2 threads give the same bits, so parity at 1 thread is parity at any count.
torch.set_num_threads(int(os.environ.get("SAM_FUSED_TEST_THREADS", "1")))


@pytest.fixture
def restore_num_threads():
    """Tests that change torch's intra-op thread count get it restored afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_dynamo():
    """A clean torch.compile cache, so each compile test captures its own graph."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
