"""Defect types: descriptors (Eq. 2), clustering, metrics against hand-computed cases, the pipeline on two planted
defect kinds of different shape and colour, and ``somad cluster``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import somad
from somad import defects as C
from somad.demo import demo_part
from somad.errors import Cancelled, ConfigError
from tests.conftest import make_config


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_of_a_hand_computed_case():
    true = [0, 0, 1, 1]
    pred = [0, 0, 0, 1]
    # ARI: sum C(n_ij, 2) = 1; rows 2 + ... -> expected index 2 * 3 / 6 = 1, max 2.5: (1 - 1) / (2.5 - 1) = 0
    assert C.ari(true, pred) == pytest.approx(0.0, abs=1e-12)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_true = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert C.nmi(true, pred) == pytest.approx(mi / ((h_true + h_pred) / 2))
    # class 0 <-> cluster 0 (2 shared), class 1 <-> cluster 1 (1 shared): F1 0.8 and 2/3
    assert C.hungarian_match(true, pred) == {0: 0, 1: 1}
    assert C.hungarian_f1(true, pred) == pytest.approx((0.8 + 2 / 3) / 2)
    m = C.clustering_metrics(true, pred)
    assert m["accuracy"] == pytest.approx(0.75)
    assert (m["n_images"], m["n_classes"], m["n_clusters"]) == (4, 2, 2)


def test_metrics_ignore_cluster_names_and_punish_missing_clusters():
    true = ["scratch", "scratch", "spot", "spot", "good"]
    pred = [7, 7, 3, 3, 0]
    for f in (C.nmi, C.ari, C.hungarian_f1):
        assert f(true, pred) == pytest.approx(1.0)
    # three classes in two clusters: one class is left unmatched and scores 0
    true = [0, 0, 1, 1, 2, 2]
    pred = [5, 5, 5, 5, 7, 7]
    assert C.hungarian_f1(true, pred) == pytest.approx((2 * 2 / (2 + 4) + 1.0 + 0.0) / 3)
    table, classes, clusters = C.contingency(true, pred)
    assert table.tolist() == [[2, 0], [2, 0], [0, 2]]
    assert classes.tolist() == [0, 1, 2] and clusters.tolist() == [5, 7]


def test_shuffled_kinds_score_near_zero():
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1, 2], 200)
    assert C.ari(true, true) == pytest.approx(1.0)
    shuffled = rng.permutation(true)
    assert abs(C.ari(true, shuffled)) < 0.02
    assert C.nmi(true, shuffled) < 0.02
    assert C.hungarian_f1(true, shuffled) < 0.45


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        C.nmi([0, 1], [0])
    with pytest.raises(ValueError):
        C.ari([], [])


# -------------------------------------------------------------------------------------------- descriptors
def test_rescaling_is_per_set_and_weights_skip_the_border():
    maps = np.zeros((2, 8, 8))
    maps[0, 4, 4] = 4.0
    maps[1, 3, 3] = 2.0
    inside = C.interior_mask((8, 8), 1)
    scaled, limits = C.rescale_maps(maps, inside)
    assert limits == (0.0, 4.0)
    assert scaled[1, 3, 3] == pytest.approx(0.5)  # per set: not 1.0 as per-image rescaling would give
    maps[0, 0, 0] = 100.0  # on the border: excluded from the limits and the weights
    scaled, limits = C.rescale_maps(maps, inside)
    assert limits == (0.0, 4.0)
    w = C.anomaly_weights(scaled, 2e-3, inside)
    assert np.allclose(w.sum(axis=(1, 2)), 1.0)
    assert w[0, 0, 0] == 0.0 and w[:, ~inside].sum() == 0.0
    assert w[0, 4, 4] > 0.999 and w[1, 3, 3] > 0.999


def _features(n=2, d=3, h=12, w=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d, h, w)).astype(np.float32))


def test_descriptor_is_the_feature_at_the_map_peak():
    f = _features()
    maps = np.zeros((2, 12, 12))
    maps[0, 5, 7] = 1.0
    maps[1, 8, 3] = 1.0
    maps[1, 0, 0] = 5.0  # border: ignored
    config = C.DescriptorConfig(feature_sigma=0.0, centre="none", border=1)
    d = C.image_descriptors(f, maps, config)
    np.testing.assert_allclose(d[0], f[0, :, 5, 7].numpy(), atol=1e-4)
    np.testing.assert_allclose(d[1], f[1, :, 8, 3].numpy(), atol=1e-4)


def test_a_flat_map_weighs_every_cell_alike_when_another_image_peaks():
    """Per-set rescaling: a bump of 1e-4 raw units next to another image's peak of 10 barely moves the weights."""
    f = _features()
    maps = np.zeros((2, 12, 12))
    maps[0] = 0.1
    maps[0, 6, 6] = 0.1001
    maps[1, 6, 6] = 10.0
    config = C.DescriptorConfig(feature_sigma=0.0, centre="none", border=2)
    d = C.image_descriptors(f, maps, config)
    inside = C.interior_mask((12, 12), 2)
    np.testing.assert_allclose(d[0], f[0][:, inside].mean(1).numpy(), atol=1e-3)


def test_centring_options():
    f = _features(d=4)
    maps = np.random.default_rng(1).random((2, 12, 12))
    shift = torch.tensor([1.0, -2.0, 3.0, 0.5]).view(1, 4, 1, 1)
    by_image = C.DescriptorConfig(centre="image", feature_sigma=2.0)
    np.testing.assert_allclose(
        C.image_descriptors(f + shift, maps, by_image), C.image_descriptors(f, maps, by_image), atol=1e-5
    )
    model = C.DescriptorConfig(centre="model", feature_sigma=0.0, border=1)
    np.testing.assert_allclose(C.image_descriptors(f, maps, model, reference=f), 0.0, atol=1e-6)
    with pytest.raises(ConfigError):
        C.image_descriptors(f, maps, model)
    with pytest.raises(ConfigError):
        C.DescriptorConfig(tau=0.0).validate()


def test_default_tau_is_in_the_papers_range():
    assert 1.5e-3 <= C.DescriptorConfig().tau <= 3e-3
    assert C.DescriptorConfig().feature_sigma == 2.0


# ---------------------------------------------------------------------------------------------- clustering
def _blobs(sizes=(12, 8, 5), d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(len(sizes), d))
    x = np.concatenate([c + rng.normal(scale=0.5, size=(s, d)) for c, s in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


@pytest.mark.parametrize("estimate", ["gap", "silhouette"])
def test_number_of_clusters_is_estimated(estimate):
    x, y = _blobs()
    assert C.estimate_n_clusters(x, estimate=estimate) == 3
    labels = C.cluster_descriptors(x, estimate=estimate)
    assert C.ari(y, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["ward", "kmeans"])
def test_clusters_are_numbered_by_size(method):
    x, y = _blobs()
    labels = C.cluster_descriptors(x, 3, method=method)
    assert C.ari(y, labels) == pytest.approx(1.0)
    assert np.bincount(labels).tolist() == [0, 12, 8, 5]


def test_good_images_form_their_own_group():
    x, _ = _blobs(sizes=(6, 6))
    scores = np.r_[np.full(3, 1.0), np.full(9, 5.0)]
    labels = C.assign_with_good_group(x, scores, 2.0, 2)
    assert labels[:3].tolist() == [0, 0, 0]
    assert set(labels[3:].tolist()) == {1, 2}
    assert C.cluster_descriptors(x[:1], 3).tolist() == [1]
    assert C.cluster_descriptors(x, 1).tolist() == [1] * 12


# ------------------------------------------------------------------------ pipeline on planted defect kinds
KINDS = ("scratch", "spot")
PLANTED_SIZE = 128


def plant(kind: str, rng: np.random.Generator, size: int = PLANTED_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A demo part with one defect: a thin bright straight scratch, or a round rust-brown spot."""
    image = demo_part(rng, size).astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    centre = size / 2 + rng.uniform(-0.2, 0.2, 2) * size
    if kind == "scratch":
        angle, half = rng.uniform(0, np.pi), rng.uniform(0.15, 0.25) * size
        step = half * np.array([np.cos(angle), np.sin(angle)])
        a, b = (tuple(int(v) for v in centre - step), tuple(int(v) for v in centre + step))
        cv2.line(mask, a, b, 1, max(2, size // 40))
        image[mask > 0] = 245.0
    else:
        cv2.circle(mask, tuple(int(v) for v in centre), int(rng.uniform(0.05, 0.08) * size), 1, -1)
        image[mask > 0] = np.array([150.0, 72.0, 32.0]) * rng.uniform(0.9, 1.1)
    return np.clip(image, 0, 255).astype(np.uint8), mask > 0


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """10 parts of each kind and 4 good parts: images, their kinds, and the same written as type folders."""
    images, kinds = [], []
    for k, kind in enumerate(KINDS):
        for i in range(10):
            images.append(plant(kind, np.random.default_rng([9, k, i]))[0])
            kinds.append(kind)
    for i in range(4):
        images.append(demo_part(np.random.default_rng([10, i]), PLANTED_SIZE))
        kinds.append("good")
    folder = tmp_path_factory.mktemp("planted") / "parts"
    for i, (image, kind) in enumerate(zip(images, kinds, strict=True)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / kind / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return images, kinds, folder


@pytest.fixture(scope="module")
def parts_model(tmp_path_factory):
    """A small model fitted on 40 good demo parts of 128 px, and its file."""
    root = somad.make_demo_dataset(
        tmp_path_factory.mktemp("parts"), n_train=40, n_test_good=1, n_test_per_defect=1, size=PLANTED_SIZE
    )
    model = somad.fit(somad.open_dataset(root), make_config(image_size=128, dims=64, som=10, epochs=3))
    path = tmp_path_factory.mktemp("parts-model") / "parts.somad"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def plain_descriptors(parts_model, planted):
    images, kinds, _ = planted
    return C.compute_descriptors(parts_model[0], images, defect_types=kinds)


def test_planted_kinds_are_separated(plain_descriptors):
    result = C.cluster_set(plain_descriptors, 2)
    kinds = np.array(result.defect_types)
    defective = kinds != "good"
    assert result.n_clusters == 2
    assert result.metrics["defective"]["ari"] > 0.6
    assert C.ari(kinds[defective], result.labels[defective]) == pytest.approx(
        result.metrics["defective"]["ari"]
    )
    shuffled = np.random.default_rng(3).permutation(kinds[defective])
    assert abs(C.ari(shuffled, result.labels[defective])) < 0.2
    assert (result.labels[result.scores < result.threshold] == 0).all()
    # the number of kinds is found without being told
    assert C.cluster_set(plain_descriptors, None).n_clusters == 2


def test_good_group_is_judged_at_the_models_threshold(parts_model, plain_descriptors):
    assert plain_descriptors.threshold == pytest.approx(parts_model[0].threshold)
    result = C.cluster_set(plain_descriptors, 2)
    assert ((result.labels == 0) == (result.scores < parts_model[0].threshold)).all()
    assert sum(result.counts().values()) == 24
    report = result.to_dict()
    assert report["metrics"]["all"]["n_images"] == 24 and len(report["images"]) == 24


def test_scores_match_the_model(parts_model, planted, plain_descriptors):
    model = parts_model[0]
    images = planted[0][:3]
    expected = [r.score for r in model.score(images)]
    np.testing.assert_allclose(plain_descriptors.scores[:3], expected, rtol=1e-5)


def test_contrastive_loss_by_hand():
    from somad.defects.contrastive import contrastive_loss

    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.3, 0.4], [0.3, 0.0], [0.6, 0.8]])  # distances 0.5, 0.3, 1.0
    positive = torch.tensor([True, False, False])
    # positive: d^2 / 2 = 0.125; negative inside the margin: (0.5 - 0.3)^2 / 2 = 0.02; beyond it: 0
    assert float(contrastive_loss(a, b, positive, 0.5)) == pytest.approx((0.125 + 0.02 + 0.0) / 3)


def test_neighbours_are_nearest_and_non_neighbours_far():
    from somad.defects.contrastive import mine_neighbours

    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    near, far = mine_neighbours(x, 3, np.random.default_rng(0))
    assert sorted(near[0].tolist()) == [1, 2, 3]
    assert sorted(near[5].tolist()) == [4, 6, 7]
    assert set(far[0].tolist()) <= {4, 5, 6, 7} and set(far[7].tolist()) <= {0, 1, 2, 3}
    assert near.shape == far.shape == (8, 3)


def test_contrastive_head_learns_and_reports_progress_and_cancel(parts_model, planted):
    from somad.defects.contrastive import ContrastiveConfig, train_head

    images, kinds, _ = planted
    stages = []
    result = C.cluster_images(
        parts_model[0],
        images,
        n=2,
        defect_types=kinds,
        contrastive=True,
        contrastive_config=ContrastiveConfig(epochs=2, out=32),
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert "contrastive" in stages and "clustering" in stages
    assert result.mode == "contrastive" and result.descriptors.shape == (24, 32)
    assert np.isfinite(result.descriptors).all() and result.n_clusters == 2
    # the loss falls: the head is trained, not left at its random start
    ex = C.extract_set(parts_model[0], images)
    grid = tuple(ex.features.shape[2:])
    maps = np.stack(ex.grid_maps)
    mask = maps >= np.quantile(maps, 0.95)
    head = train_head(
        ex.features, mask, np.random.default_rng(0).normal(size=(24, 4)), ContrastiveConfig(epochs=6)
    )
    assert head.losses[-1] < 0.8 * head.losses[0]
    assert grid == mask.shape[1:]
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 8

    with pytest.raises(Cancelled):
        C.cluster_images(parts_model[0], images, n=2, contrastive=True, cancel=cancel)


def test_blind_mode_needs_no_threshold(parts_model, planted):
    from somad.defects.blind import BlindConfig

    images, kinds, _ = planted
    result = C.cluster_images(
        parts_model[0],
        images,
        n=2,
        defect_types=kinds,
        blind=True,
        blind_config=BlindConfig(iterations=150, batch_cells=256),
    )
    assert result.mode == "blind" and result.threshold is None
    assert result.n_clusters == 2 and set(np.unique(result.labels)) == {0, 1, 2}
    means = {k: result.scores[result.labels == k].mean() for k in (0, 1, 2)}
    assert means[0] == min(means.values())  # the good group is the least anomalous cluster
    assert result.maps[0].shape == (PLANTED_SIZE, PLANTED_SIZE)
    assert 0.0 <= result.metrics["all"]["nmi"] <= 1.0


def test_collect_images_reads_type_folders(planted, tmp_path):
    _, kinds, folder = planted
    paths, types = C.collect_images(folder)
    assert len(paths) == 24 and sorted(types) == sorted(kinds)
    assert all(p.parent.name == t for p, t in zip(paths, types, strict=True))
    (folder.parent / "loose").mkdir(exist_ok=True)
    cv2.imwrite(str(folder.parent / "loose" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    assert C.collect_images(folder.parent / "loose")[1] is None
    with pytest.raises(somad.DataError):
        C.collect_images(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------- CLI
def _run(argv):
    from somad_cli.cluster import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_cli_prints_clusters_and_metrics_and_writes_outputs(parts_model, planted, tmp_path):
    _, kinds, folder = planted
    out, report = tmp_path / "out", tmp_path / "report.json"
    rc, stdout, stderr = _run(
        ["cluster", str(parts_model[1]), str(folder), "--n", "2", "--out", str(out), "--json", str(report)]
    )
    assert rc == 0, stderr
    assert "cluster 0 (judged good)" in stdout and "cluster 2 (defect cluster)" in stdout
    assert "spot/" in stdout and "NMI" in stdout and "ARI" in stdout and "F1" in stdout
    assert "random-init" in stdout
    with open(out / "clusters.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "cluster", "cluster_name", "score", "defect_type"]
    assert len(rows) == 25 and {r[4] for r in rows[1:]} == set(kinds)
    data = json.loads(report.read_text())
    assert data["n_clusters"] == 2 and data["metrics"]["defective"]["ari"] > 0.6
    sheets = sorted(p.name for p in out.glob("cluster_*.png"))
    assert sheets == [
        f"cluster_{k:02d}_{n}.png" for k, n in ((0, "good"), (1, "cluster_1"), (2, "cluster_2"))
    ]
    sheet = cv2.imread(str(out / sheets[1]))
    assert sheet is not None and sheet.shape[0] >= 128
    counts = {int(k): len(v) for k, v in data["clusters"].items()}
    assert sum(counts.values()) == 24
    for k, n in counts.items():
        assert f"cluster {k} (" in stdout and f": {n} images" in stdout


@pytest.mark.parametrize(
    "args, text",
    [(["--n", "0"], "--n"), (["--tau", "-1"], "tau")],
)
def test_cli_rejects_bad_options_in_one_line(parts_model, planted, args, text):
    rc, _, stderr = _run(["cluster", str(parts_model[1]), str(planted[2]), *args])
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("somad: error:") and text in lines[0]


def test_cli_reports_a_missing_folder(parts_model, tmp_path):
    rc, _, stderr = _run(["cluster", str(parts_model[1]), str(tmp_path / "nowhere")])
    assert rc == 2 and "does not exist" in stderr


def test_register_adds_the_subcommand():
    import argparse

    from somad_cli.cluster import cmd_cluster, register

    parser = argparse.ArgumentParser(prog="somad")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["cluster", "m.somad", "data", "--n", "3", "--contrastive", "--blind"])
    assert args.handler is cmd_cluster
    assert (args.n, args.contrastive, args.blind, args.centre, args.method) == (
        3,
        True,
        True,
        "model",
        "ward",
    )
    assert Path(args.data) == Path("data")
