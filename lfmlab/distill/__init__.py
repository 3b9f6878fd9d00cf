"""Model distillation (survey §3): learn a model from another model, without its training data."""
