"""The profiling benchmarks run on small shapes (their numbers are in benchmarks/RESULTS.md)."""

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="profiles the JAX kernel")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_jax_kernel_parts_times_every_part(cell, capsys):
    from benchmarks import jax_kernel_parts

    assert jax_kernel_parts.main(["--cell", cell, "--batch", "3", "--steps", "4", "--features", "2",
                                  "--units", "5", "--rounds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == [
        "forward", "forward, keeping", "backward", "products", "backward loop", "gradient",
        "chained products, forward's shape", "chained products, backward's shape"]
