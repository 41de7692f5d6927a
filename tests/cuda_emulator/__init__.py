"""CPU emulator of the CUDA execution model for testing csrc/cuda without a GPU (see README.md)."""
