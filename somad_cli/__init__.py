"""SOMAD Inspector's command line, ``somad``: a front end of the headless core, beside the window."""
