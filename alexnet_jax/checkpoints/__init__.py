"""Checkpoints: `manager` (orbax), `compatibility` (the fingerprint, older configs), `faults`
(unusable steps), `trained_run` (a run read back), `weights_file` (one .npz, fine-tuning)."""
