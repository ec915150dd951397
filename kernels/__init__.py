"""Triton kernels for the latent policy gradient (imported only when the triton backend is used)."""
