"""Training panel: every fitting option in a form, the memory estimate, Fit/Cancel, progress and a log."""
