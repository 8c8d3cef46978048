"""The commands that read a trained run: predict, figures (3 and 4), features and the weights
export. What they share (the run's flags, the decoding of image files) is tools/common.py; the
run itself is read by checkpoints/trained_run.py, which fine-tuning uses too."""
