"""Dataset browser: the tree model of the dataset (``model``) and its dock widget (``widget``)."""
