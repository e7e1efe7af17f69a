"""The Regions dock: the region rule (pixel threshold, minimum defect area) and the current image's regions."""
