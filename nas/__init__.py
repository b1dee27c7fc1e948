"""vitamin-nas: architecture search and scaling studies for CLIP image encoders."""

__version__ = "0.1.0"
