"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX/Flax."""
