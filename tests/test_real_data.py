"""The real data beside the checkout: a test that needs it skips with a reason outside CI and
fails in CI, which always has it (so that CI never passes without having checked real data)."""

from __future__ import annotations

import pytest

from tests.conftest import require_real_data


def test_present_real_data_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "readme.txt").write_text("x")
    assert require_real_data(tmp_path / "readme.txt", "the readme") == tmp_path / "readme.txt"


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_missing_real_data_fails_in_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="real TV-HI clips not found at .*CI"):
        require_real_data(tmp_path / "missing.avi", "real TV-HI clips")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_real_data_skips_with_its_reason_outside_ci(tmp_path, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="real TV-HI clips not found at .*missing"):
        require_real_data(tmp_path / "missing.avi", "real TV-HI clips")
