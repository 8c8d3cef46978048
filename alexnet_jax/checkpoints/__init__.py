"""Checkpoints, in one place: `manager` (orbax's CheckpointManager: save, restore, which step
a name means), `compatibility` (the model fingerprint a checkpoint must match, and an older
run's config brought up to today's fields), `faults` (damaged steps, refused writes, processes
that disagree, told in one line), `trained_run` (a trained run read back: its config, its
parameters, its class names and constants) and `weights_file` (the parameters as one .npz, and
fine-tuning's start from it or from another run)."""
