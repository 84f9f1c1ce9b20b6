import pytest


@pytest.fixture(autouse=True)
def _no_runtime_leaks(no_runtime_leaks):
    """Every test here ends with no runtime alive and no thread left behind."""
    yield
