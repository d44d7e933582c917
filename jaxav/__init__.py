"""jaxav: self-supervised audio and audio-visual representation learning in JAX."""

__version__ = "0.1.0"
