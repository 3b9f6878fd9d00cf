"""Meta learning (survey §5): MAML and relatives, ProtoNets, and data-free meta-learning from a model zoo."""
