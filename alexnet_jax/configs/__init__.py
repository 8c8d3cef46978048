"""`get_config(arg)` files for `--config=FILE[:ARG]`, importing only ml_collections and each
other; the repository's top-level `configs` links here."""
