"""The sections of the report and of the quarterly review (names and titles), apart from
the report code so the CLI can list them without importing PostgreSQL's driver."""

from __future__ import annotations

__all__ = ["REVIEW_SECTIONS", "SECTIONS"]

SECTIONS: tuple[tuple[str, str], ...] = (
    ("problematic_models", "Problematic models"),
    ("provider_success_rates", "Provider success rates (lowest first)"),
    ("blacklisted", "Blacklisted now"),
    ("endpoint_hints", "Learned endpoint hints"),
    ("compat_hints", "Learned compatibility hints"),
    ("recent_transitions", "Recent transitions (newest first)"),
)
"""The report's sections: (name used by ``--section``, title)."""

REVIEW_SECTIONS: tuple[tuple[str, str], ...] = (
    ("providers", "Providers, lowest success rate first"),
    ("models", "Models, lowest success rate first"),
    ("target_order", "Suggested target order per model family (best first)"),
)
"""The quarterly review's sections: (name, title)."""
