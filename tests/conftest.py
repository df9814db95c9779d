"""Shared test set-up: the plugin is imported (and so registered) before any test runs."""
import random

import numpy as np
import pytest
import torch

import sdan_basicsr  # noqa: F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
