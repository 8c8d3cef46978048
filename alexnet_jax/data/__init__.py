"""Input data for paper section 4.1: sources, augmentation, statistics, generated images.

The training loop uses `alexnet_jax.input_pipeline`; these modules are its parts.
"""
