"""Shared fixtures. `../shared` (the real traces) sits beside the checkout in CI and dev."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AZURE_2023 = SHARED / "traces" / "azure_llm_2023"


@pytest.fixture
def azure_2023_dir() -> Path:
    """Folder with the real Azure 2023 code and conv traces; skips when ../shared is absent."""
    if not (AZURE_2023 / "AzureLLMInferenceTrace_conv.csv").exists():
        pytest.skip(f"real traces not found at {AZURE_2023} (../shared is absent in this checkout)")
    return AZURE_2023
