"""Spec builders shared by tests live in :mod:`kasal.testing.specs` (benchmarks use them)."""

from kasal.testing.specs import FAST_RETRY, crew, offline_agent, stub_agent

__all__ = ["FAST_RETRY", "crew", "offline_agent", "stub_agent"]
