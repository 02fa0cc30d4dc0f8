"""Test setup. The backend is fixed when Keras is imported: run the suite once per backend,
each in its own process (`KERAS_BACKEND=jax pytest`, ...; `make test` runs all three)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    yield
