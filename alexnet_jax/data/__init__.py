"""The host's input (sections 2, 4.1): `input_pipeline` and its sources, decoding, statistics."""
