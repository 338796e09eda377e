"""Shared fixtures.

Real-data tests run only when the environment variable ``PROSTSEG_REAL_DATA`` points at
the folder of real prostate MRI described in ``../shared/data/README.md``; ``.ci/run``
sets it. Everything else runs on generated phantoms.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prostseg.book.data import REAL_DATA_ENV


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real-data folder, or skip the test when ``PROSTSEG_REAL_DATA`` is unset."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        pytest.skip(f"set {REAL_DATA_ENV} to the real-data folder to run this test")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{REAL_DATA_ENV}={value} is not a folder")
    return path


#: Grid of the cases in ``phantom_dir``: small and coarse so that the fixture is fast.
PHANTOM_CASE_KWARGS = {"shape": (96, 96, 12), "spacing": (1.4, 1.4, 4.0)}


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Four small phantom cases (seed 0) in the case layout, shared by the session.

    Tests must not modify it; copy it to ``tmp_path`` first when they need to.
    """
    from prostseg.data.phantom import write_phantom_dataset

    out_dir = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(out_dir, n_cases=4, seed=0, **PHANTOM_CASE_KWARGS)
    return out_dir
