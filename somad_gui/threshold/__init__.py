"""Threshold panel: score histogram, slider and presets, verdict summary, metrics and ROC curve."""
