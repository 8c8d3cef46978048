"""Configs: `get_config(arg)` files for `--config=FILE[:ARG]` (ml_collections config_flags).

They import only ml_collections and each other, so loading one never starts TensorFlow or JAX
and no config depends on code that depends on configs. The repository's top-level `configs`
is a symbolic link to this folder, so `--config=configs/paper.py` works from its root.
"""
