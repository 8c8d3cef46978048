"""Checkpoints: `manager` (orbax), `compatibility` (the fingerprint, older configs), `integrity`
(unusable steps), `trained_run` (a run read back), `weights_file` (one .npz, fine-tuning)."""
