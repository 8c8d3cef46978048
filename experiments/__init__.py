"""Sweeps over configs, the paper's CIFAR-10 experiments, and the tables and plots they make."""
