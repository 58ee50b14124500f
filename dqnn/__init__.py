"""dqnn: Direct Quantization (DQ) for training low-bit-width CNNs in JAX/Flax."""
