"""Human formatting of bytes and times for the pages: the one formatter of
:mod:`monitoring.units` (the policy's sentences, the CLI and the cards write numbers alike)."""

from monitoring.units import fmt_bytes, fmt_seconds

__all__ = ["fmt_bytes", "fmt_seconds"]
