import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
