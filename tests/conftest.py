import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker, in the worker and in the commands it starts: workers that each run
    # as many threads as there are cores oversubscribe the machine and slow every test severalfold
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """tv:mobilenet_v2 trained as a US-Net on digits for 3 epochs (about 40 s), saved."""
    import usconvert
    torch.manual_seed(0)
    model, source = usconvert.create("tv:mobilenet_v2", num_classes=10)
    net = usconvert.convert(model, (3, 32, 32), source=source)
    path = tmp_path_factory.mktemp("digits") / "digits_us.safetensors"
    recipe = Path(__file__).parents[1] / "recipes" / "digits.yaml"
    history = usconvert.train(net, path, recipe=recipe, epochs=3)
    return path, history


if __import__("os").environ.get("USCONVERT_MUTANT"):  # benchmarks/mutate_rules.py: a weakened rule
    import mutation  # noqa: E402,F401
