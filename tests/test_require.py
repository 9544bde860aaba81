"""conftest.require: a missing component fails the test, unless LLMPACK_ALLOW_MISSING names it."""

import pytest

import conftest
from conftest import require


def test_missing_component_fails_unless_allowed(monkeypatch):
    require("chromium", True)  # present: nothing happens
    monkeypatch.setattr(conftest, "ALLOW_MISSING", set())
    with pytest.raises(pytest.fail.Exception, match="chromium is missing .*LLMPACK_ALLOW_MISSING=chromium"):
        require("chromium", False, "no Chromium at /x")
    monkeypatch.setattr(conftest, "ALLOW_MISSING", {"chromium"})
    with pytest.raises(pytest.skip.Exception, match="allowed by LLMPACK_ALLOW_MISSING"):
        require("chromium", False, "no Chromium at /x")
    with pytest.raises(pytest.fail.Exception):  # only the components it names
        require("f16", False)
