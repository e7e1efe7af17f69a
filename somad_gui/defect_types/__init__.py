"""The "Defect types" pane: clusters of defective images by kind, with rename, drag-to-move and CSV export."""

from somad_gui.defect_types.names import ClusterNames
from somad_gui.defect_types.widget import DefectTypesDock, DefectTypesWidget
from somad_gui.defect_types.work import make_thumbnails

__all__ = ["ClusterNames", "DefectTypesDock", "DefectTypesWidget", "make_thumbnails"]
