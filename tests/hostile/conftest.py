"""Hostile clients against real service processes on loopback (fixtures of tests/service)."""

from tests.service.conftest import launch, make_wav  # noqa: F401  (fixtures)
