"""The wheel is the product: built, checked, installed into a fresh virtual
environment outside the checkout and run there (scripts/check_package.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import processes as p

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.package
def test_the_installed_wheel_migrates_serves_and_exports(pg_url: str) -> None:
    p.require_redis()
    result = subprocess.run(
        [str(ROOT / "scripts" / "check_package.sh"), pg_url],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "check_installed: the installed package works" in result.stdout
