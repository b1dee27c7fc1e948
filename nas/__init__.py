"""vitamin-nas: architecture search and scaling studies for CLIP image encoders."""
