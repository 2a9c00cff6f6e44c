"""Shared fixtures: every test starts from the default configuration."""

import pytest

import shmdask.config


@pytest.fixture(autouse=True)
def _fresh_config():
    yield
    shmdask.config.refresh()
