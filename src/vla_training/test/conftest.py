"""The dataset cache of every test run lives in a temporary directory, not in the user's ~/.cache."""
import os

import pytest


@pytest.fixture(autouse=True, scope='session')
def _dataset_cache_dir(tmp_path_factory):
    old = os.environ.get('VLA_CACHE_DIR')
    os.environ['VLA_CACHE_DIR'] = str(tmp_path_factory.mktemp('vla_cache'))
    yield
    if old is None:
        os.environ.pop('VLA_CACHE_DIR', None)
    else:
        os.environ['VLA_CACHE_DIR'] = old
