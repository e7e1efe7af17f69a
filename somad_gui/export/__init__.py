"""Export: annotated PNGs and 4-panel figures rendered with numpy/OpenCV, batch export with a CSV report."""
