"""Classic image-level detectors on globally pooled backbone features (the baselines of Krickl, JKU 2023).

One-Class SVM, Isolation Forest, Kernel Density, Local Outlier Factor (novelty mode) and Elliptic Envelope
after PCA, as in that report's Table 3. Each image is one vector: the global average of one backbone stage's
whole output (``stage``, default the deepest of ``features.layers``; all its channels), standardised with the
training mean and standard deviation. With ``augment`` the training set also holds rotated (90, 180, 270) and
flipped (horizontal, vertical) copies of every image (the report's 1:5 ratio); this helps parts whose
orientation is free and hurts parts whose orientation is itself checked.

Fitting is scikit-learn's. Scoring uses the fitted parameters directly (support vectors, trees, training
points, PCA and robust covariance) with the estimators' own formulas, so that a model file holds tensors
only (never a pickle) and a loaded model scores exactly as the one that was saved; tests check the formulas
against scikit-learn. Scores are oriented so that higher means more anomalous (the negated
``score_samples`` / ``decision_function``). These methods give no anomaly map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from somad.errors import ConfigError
from somad.features import BACKBONE_BYTES
from somad.methods.base import RUN_OPTIONS, Detector, FeatureSet, OptionSpec, stage_features
from somad.progress import Monitor

#: Image-level methods read whole stages, so the channel subset (``dims``) does not apply to them.
IMAGE_FEATURE_OPTIONS: tuple[str, ...] = (
    "features.backbone",
    "features.layers",
    "features.image_size",
    "features.seed",
    "features.weights",
    "features.random_init",
    "features.zero_init_last",
    "features.batch_size",
)

COMMON_OPTIONS = (
    OptionSpec(
        "stage",
        int,
        0,
        "backbone stage to pool (0: the deepest of the feature layers)",
        minimum=0,
        special="deepest layer",
    ),
    OptionSpec("augment", bool, False, "add rotated and flipped copies of the training images"),
)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances in float64, exact enough for density and neighbour scores."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()


class ImageLevelDetector(Detector):
    """Shared plumbing: stage choice, augmentation, standardisation, float64 parameter tensors."""

    gives_maps = False
    needs_patches = False
    needs_pooled = True
    config_options = (*IMAGE_FEATURE_OPTIONS, *RUN_OPTIONS)

    def __init__(self, config=None, options=None, device="cpu"):
        super().__init__(config, options, device)
        self.params: dict[str, torch.Tensor] = {}
        stage = self.options["stage"] or max(self.config.features.layers)
        if stage not in self.config.features.layers:
            raise ConfigError(f"stage {stage}: not one of the feature layers {self.config.features.layers}")
        self.stage = stage

    #: Channels of a stage at most (ResNet-50's and Wide-ResNet's deepest stage): the estimate's bound.
    MAX_STAGE_CHANNELS = 2048

    @classmethod
    def estimate_memory(cls, config, options, n_images: int) -> dict[str, int]:
        """Pooled features (N, C) float64, times 6 with augmentation; a model of at most as many numbers
        (support vectors, training points); an upper bound, since C is known only once the network is built."""
        rows = n_images * (6 if options.get("augment") else 1)
        features = 8 * rows * cls.MAX_STAGE_CHANNELS
        return {"features": features, "model": features, "peak": 3 * features + BACKBONE_BYTES}

    @property
    def wants_augmented(self) -> bool:
        return bool(self.options["augment"])

    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> ImageLevelDetector:
        if monitor is not None:
            monitor.step("fit", 0, 1)
        x = stage_features(features, self.stage, self.wants_augmented).numpy()
        if x.shape[0] < 2:
            raise ConfigError(f"{self.label}: needs at least 2 training images, got {x.shape[0]}")
        mean = x.mean(0)
        scale = x.std(0)
        scale[scale < 1e-12 * max(float(np.abs(x).max()), 1.0)] = 1.0
        self.params = {"mean": torch.from_numpy(mean), "scale": torch.from_numpy(scale)}
        fitted = self._fit((x - mean) / scale)
        self.params.update(
            {k: torch.as_tensor(np.ascontiguousarray(v)).to(torch.float64) for k, v in fitted.items()}
        )
        self.fitted = True
        if monitor is not None:
            monitor.step("fit", 1, 1)
        return self

    @torch.inference_mode()
    def score(self, features: FeatureSet) -> torch.Tensor:
        self._check_fitted()
        x = stage_features(features, self.stage, False)
        return self._score((x - self.params["mean"]) / self.params["scale"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return dict(self.params)

    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        names = ("mean", "scale", *self.param_names)
        self.params = {
            n: t.to(torch.float64) for n, t in zip(names, self._require(tensors, *names), strict=True)
        }
        if self.params["mean"].shape != self.params["scale"].shape or self.params["mean"].ndim != 1:
            raise ValueError("tensors mean and scale must be two vectors of the same length")

    # -- per method ---------------------------------------------------------------------------------------
    param_names: tuple[str, ...] = ()

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _int(self, name: str, limit: int) -> int:
        return max(1, min(int(self.options[name]), limit))


class OneClassSvmDetector(ImageLevelDetector):
    name = "ocsvm"
    label = "One-Class SVM"
    summary = "One-Class SVM on pooled stage features (Schoelkopf et al. 2001)"
    option_specs = (
        *COMMON_OPTIONS,
        OptionSpec("kernel", str, "rbf", "kernel", choices=("rbf", "linear", "poly", "sigmoid")),
        OptionSpec("nu", float, 0.5, "upper bound on training outliers", minimum=1e-6, maximum=1.0),
        OptionSpec("gamma", float, 0.0, "kernel coefficient (0: scikit-learn's 'scale')", minimum=0.0),
        OptionSpec("degree", int, 3, "poly kernel degree", minimum=1),
        OptionSpec("coef0", float, 0.0, "poly and sigmoid kernel offset"),
    )
    param_names = ("support_vectors", "dual_coef", "intercept", "gamma")

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        from sklearn.svm import OneClassSVM

        o = self.options
        model = OneClassSVM(
            kernel=o["kernel"], nu=o["nu"], gamma=o["gamma"] or "scale", degree=o["degree"], coef0=o["coef0"]
        ).fit(x)
        return {
            "support_vectors": model.support_vectors_,
            "dual_coef": model.dual_coef_[0],
            "intercept": model.intercept_,
            "gamma": np.array([model._gamma]),
        }

    def kernel(self, x: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
        o, gamma = self.options, float(self.params["gamma"][0])
        if o["kernel"] == "rbf":
            return torch.exp(-gamma * _squared_distances(x, sv))
        dot = x @ sv.T
        if o["kernel"] == "linear":
            return dot
        if o["kernel"] == "poly":
            return (gamma * dot + o["coef0"]) ** o["degree"]
        return torch.tanh(gamma * dot + o["coef0"])

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``OneClassSVM.decision_function``: positive inside the learned support."""
        p = self.params
        return self.kernel(x, p["support_vectors"]) @ p["dual_coef"] + p["intercept"][0]

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -self.decision_function(x)


def average_path_length(n: np.ndarray) -> np.ndarray:
    """Expected path length of an unsuccessful binary-search-tree search among ``n`` points (iForest's c(n))."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForestDetector(ImageLevelDetector):
    name = "iforest"
    label = "Isolation Forest"
    summary = "Isolation Forest on pooled stage features (Liu et al. 2008)"
    option_specs = (
        *COMMON_OPTIONS,
        OptionSpec("n_estimators", int, 100, "number of trees", minimum=1),
        OptionSpec("seed", int, 0, "random state", minimum=0),
    )
    param_names = ("left", "right", "feature", "threshold", "path_length", "roots", "normaliser")

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(n_estimators=self.options["n_estimators"], random_state=self.options["seed"])
        model.fit(x)
        left, right, feature, threshold, path, roots = [], [], [], [], [], []
        offset = 0
        # With every feature drawn (max_features=1.0, the default used here) scikit-learn trains each tree on
        # the columns as given, so tree feature indices are column indices.
        for tree in model.estimators_:
            t = tree.tree_
            is_leaf = t.children_left < 0
            depth = np.zeros(t.node_count)
            for node in range(t.node_count):  # children always follow their parent
                if not is_leaf[node]:
                    depth[t.children_left[node]] = depth[t.children_right[node]] = depth[node] + 1
            left.append(np.where(is_leaf, -1, t.children_left + offset))
            right.append(np.where(is_leaf, -1, t.children_right + offset))
            feature.append(np.where(is_leaf, 0, t.feature))
            threshold.append(t.threshold)
            path.append(depth + average_path_length(t.n_node_samples))
            roots.append(offset)
            offset += t.node_count
        return {
            "left": np.concatenate(left),
            "right": np.concatenate(right),
            "feature": np.concatenate(feature),
            "threshold": np.concatenate(threshold),
            "path_length": np.concatenate(path),
            "roots": np.array(roots),
            "normaliser": average_path_length(np.array([model.max_samples_])),
        }

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """``2 ** (-mean path length / c(max_samples))``: scikit-learn's ``-score_samples``."""
        p = self.params
        left, right = p["left"].long(), p["right"].long()
        feature, threshold = p["feature"].long(), p["threshold"]
        xs = x.to(torch.float32).to(torch.float64)  # trees compare float32 inputs, as scikit-learn does
        node = p["roots"].long().expand(x.shape[0], -1).clone()
        rows = torch.arange(x.shape[0]).unsqueeze(1)
        while True:
            inner = left[node] >= 0
            if not bool(inner.any()):
                break
            go_left = xs[rows, feature[node]] <= threshold[node]
            node = torch.where(inner, torch.where(go_left, left[node], right[node]), node)
        depth = p["path_length"][node].mean(1)
        return torch.pow(2.0, -depth / p["normaliser"][0])


class KernelDensityDetector(ImageLevelDetector):
    name = "kde"
    label = "Kernel Density"
    summary = "Gaussian kernel density of pooled stage features (Rosenblatt 1956)"
    option_specs = (
        *COMMON_OPTIONS,
        OptionSpec(
            "bandwidth",
            float,
            "scott",
            "kernel width: a number, scott or silverman",
            minimum=1e-9,
            keywords=("scott", "silverman"),
        ),
    )
    param_names = ("train", "bandwidth")

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        from sklearn.neighbors import KernelDensity

        model = KernelDensity(kernel="gaussian", bandwidth=self.options["bandwidth"]).fit(x)
        return {"train": x, "bandwidth": np.array([model.bandwidth_])}

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``KernelDensity.score_samples`` (Gaussian kernel, exact)."""
        train, h = self.params["train"], float(self.params["bandwidth"][0])
        n, d = train.shape
        logs = torch.logsumexp(-0.5 * _squared_distances(x, train) / (h * h), dim=1)
        return logs - math.log(n) - 0.5 * d * math.log(2.0 * math.pi) - d * math.log(h)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_density(x)


class LocalOutlierFactorDetector(ImageLevelDetector):
    name = "lof"
    label = "Local Outlier Factor"
    summary = "Local Outlier Factor in novelty mode on pooled stage features (Breunig et al. 2000)"
    option_specs = (
        *COMMON_OPTIONS,
        OptionSpec("n_neighbors", int, 20, "neighbours (at most the training images minus one)", minimum=1),
    )
    param_names = ("train", "k_distance", "lrd")

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        from sklearn.neighbors import LocalOutlierFactor

        k = self._int("n_neighbors", x.shape[0] - 1)
        model = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(x)
        distances, neighbours = model.kneighbors()  # the training points' own neighbours, self excluded
        k_distance = distances[:, -1]
        reach = np.maximum(distances, k_distance[neighbours])
        lrd = 1.0 / (reach.mean(1) + 1e-10)
        return {"train": x, "k_distance": k_distance, "lrd": lrd}

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """The local outlier factor: scikit-learn's ``-score_samples`` in novelty mode."""
        p = self.params
        k = self._int("n_neighbors", p["train"].shape[0] - 1)
        d2, neighbours = torch.topk(_squared_distances(x, p["train"]), k, dim=1, largest=False)
        reach = torch.maximum(d2.sqrt(), p["k_distance"][neighbours])
        lrd = 1.0 / (reach.mean(1) + 1e-10)
        return (p["lrd"][neighbours] / lrd.unsqueeze(1)).mean(1)


class EllipticEnvelopeDetector(ImageLevelDetector):
    name = "elliptic"
    label = "Elliptic Envelope"
    summary = "robust Gaussian (minimum covariance determinant) after PCA (Rousseeuw and Van Driessen 1999)"
    option_specs = (
        *COMMON_OPTIONS,
        OptionSpec("pca_components", int, 32, "PCA components (at most half the training images)", minimum=1),
        OptionSpec("seed", int, 0, "random state", minimum=0),
    )
    param_names = ("pca_mean", "pca_components", "location", "precision")

    def _fit(self, x: np.ndarray) -> dict[str, Any]:
        from sklearn.covariance import EllipticEnvelope
        from sklearn.decomposition import PCA

        # The minimum covariance determinant needs clearly more samples than dimensions.
        components = self._int("pca_components", min(x.shape[1], (x.shape[0] - 1) // 2))
        pca = PCA(n_components=components, random_state=self.options["seed"]).fit(x)
        envelope = EllipticEnvelope(random_state=self.options["seed"]).fit(pca.transform(x))
        return {
            "pca_mean": pca.mean_,
            "pca_components": pca.components_,
            "location": envelope.location_,
            "precision": envelope.precision_,
        }

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance to the robust centre: scikit-learn's ``-score_samples``."""
        p = self.params
        z = (x - p["pca_mean"]) @ p["pca_components"].T - p["location"]
        return ((z @ p["precision"]) * z).sum(1)


IMAGE_LEVEL_DETECTORS: tuple[type[ImageLevelDetector], ...] = (
    OneClassSvmDetector,
    IsolationForestDetector,
    KernelDensityDetector,
    LocalOutlierFactorDetector,
    EllipticEnvelopeDetector,
)
