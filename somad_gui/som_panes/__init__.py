"""SOM panes: the U-matrix and the hit-count map, with node highlights linked to the viewer."""
