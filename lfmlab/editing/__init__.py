"""Model editing (survey §6): locate (causal tracing), then edit."""
