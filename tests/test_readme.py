"""The README's Python examples run as written (with fewer epochs, to stay quick)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run():
    blocks = _python_blocks()
    assert len(blocks) == 6
    # the others run in tests/test_semi_supervised.py and tests/test_imputation.py
    api, parts, own_program, objectives = blocks[:4]
    namespace: dict = {}
    exec(api.replace("epochs=50", "epochs=1"), namespace)
    summary = namespace["estimate"].summary()
    assert summary["log_likelihood"] >= summary["elbo"]
    exec(parts, namespace)
    assert namespace["model"].data_shape == (784,)
    own = {"x_train": torch.randn(64, 5), "x_test": torch.randn(8, 5)}
    exec(own_program.replace("epochs=20", "epochs=1"), own)
    namespace = {}
    exec(objectives.replace("epochs=20", "epochs=1"), namespace)
    assert namespace["spec"].architecture == "hierarchical"
