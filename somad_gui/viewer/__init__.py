"""The image viewer: heatmap overlay, contours, ground truth, 4-panel mode and cursor readout."""
