"""Fixtures of the trainables tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tensors of a few hundred values: a second thread only adds waiting (on a busy 2-core
    machine a LayerNorm took 5 ms on 2 threads, 10 us on one). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
