"""Figure functions (matplotlib). Each takes results and returns a Figure, saving PNG and SVG when given a path.

Figures are built on `matplotlib.figure.Figure` directly, never `pyplot`, so they render with the Agg
backend on any headless machine and leave no global figure state behind.
"""
