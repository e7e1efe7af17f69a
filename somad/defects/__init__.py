"""Defect types: anomaly-weighted image descriptors, clustering into kinds, and clustering metrics.

Follows Ardelean and Weyrich, "Blind Localization and Clustering of Anomalies in Textures" (section 3.2):

* **Descriptors** (Eq. 2): ``D_i = sum_xy F_i^xy softmax(A_i / tau)^xy``. The feature map ``F_i`` (the model's
  patch features, ``(d, gh, gw)``) is smoothed with a Gaussian of ``feature_sigma`` = 2 feature cells and centred
  (by default on the detector's expectation of a normal cell, see :class:`DescriptorConfig`); the anomaly map ``A_i`` is taken at the feature
  grid's resolution and rescaled to [0, 1] with the minimum and maximum of the *whole set* of maps (not per
  image), so an image whose map is flat gets nearly uniform weights while one with a sharp peak is summarised
  by its peak. ``tau`` defaults to 2e-3, inside the paper's useful range 1.5e-3 .. 3e-3. A border of
  ``border`` cells is excluded from the rescaling and the softmax, as the paper discards image borders.
* **Clustering**: Ward agglomerative clustering (``scipy.cluster.hierarchy``) or k-means (scikit-learn) into a
  given number of clusters, or a number estimated from the largest gap between successive Ward merge heights
  or from the best silhouette. Images judged good at the detector's threshold are not clustered: they form
  their own group, label 0; defect clusters are 1..n, numbered by decreasing size.
* **Metrics**: NMI and ARI (scikit-learn) and F1 after an optimal one-to-one matching of clusters to classes
  (``scipy.optimize.linear_sum_assignment``, the Jonker-Volgenant algorithm the paper cites).

:func:`cluster_images` runs the whole pipeline on a fitted SOMAD :class:`~somad.model.FittedModel`; ``contrastive=True``
first trains the projection head of :mod:`somad.defects.contrastive` and ``blind=True`` replaces the model's anomaly maps
by the training-free ones of :mod:`somad.defects.blind`.
"""

from __future__ import annotations

from somad.defects.blind import BlindConfig
from somad.defects.contrastive import ContrastiveConfig
from somad.defects.descriptors import (
    DescriptorConfig,
    anomaly_weights,
    default_border,
    image_descriptors,
    interior_mask,
    maps_to_grid,
    prepare_features,
    rescale_maps,
)
from somad.defects.export import CSV_COLUMNS, cluster_name, contact_sheet, thumbnail, write_cluster_csv
from somad.defects.grouping import (
    GOOD_LABEL,
    assign_with_good_group,
    cluster_descriptors,
    estimate_n_clusters,
    ward_linkage,
)
from somad.defects.pipeline import (
    ClusteringConfig,
    ClusterResult,
    DescriptorSet,
    Extraction,
    cluster_images,
    cluster_set,
    collect_images,
    compute_descriptors,
    extract_set,
    with_descriptor_options,
)
from somad.defects.scores import ari, clustering_metrics, contingency, hungarian_f1, hungarian_match, nmi

__all__ = [
    "CSV_COLUMNS",
    "GOOD_LABEL",
    "BlindConfig",
    "ClusterResult",
    "ClusteringConfig",
    "ContrastiveConfig",
    "DescriptorConfig",
    "DescriptorSet",
    "Extraction",
    "anomaly_weights",
    "ari",
    "assign_with_good_group",
    "cluster_descriptors",
    "cluster_images",
    "cluster_name",
    "cluster_set",
    "clustering_metrics",
    "collect_images",
    "compute_descriptors",
    "contact_sheet",
    "contingency",
    "default_border",
    "estimate_n_clusters",
    "extract_set",
    "hungarian_f1",
    "hungarian_match",
    "image_descriptors",
    "interior_mask",
    "maps_to_grid",
    "nmi",
    "prepare_features",
    "rescale_maps",
    "thumbnail",
    "ward_linkage",
    "with_descriptor_options",
    "write_cluster_csv",
]
