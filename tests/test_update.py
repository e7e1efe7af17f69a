"""Updating a SOMAD model with more good images: merged node statistics equal a fit on the union; the model's
scores of the added images fall; the CLI writes a new file and leaves the old one as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import somad
from somad.gaussian import fit_node_gaussians
from somad.progress import Monitor
from somad.update import merge_node_statistics
from somad_cli.main import main
from tests.conftest import FAST_FIT


@pytest.mark.parametrize("shrinkage", [0.0, 5.0])
def test_merged_statistics_equal_a_fit_on_the_union(shrinkage):
    gen = torch.Generator().manual_seed(0)
    n_nodes, dims = 7, 5
    centres = torch.randn(n_nodes, dims, generator=gen) * 4
    a_nodes = torch.randint(0, n_nodes - 1, (300,), generator=gen)  # the last node: no old hits
    a_nodes[:2] = torch.tensor([5, 5])
    a_nodes[a_nodes == 4] = 3  # node 4: no old hits either, but new ones
    a_nodes[10] = 4  # ... exactly one old hit (a single-patch node)
    b_nodes = torch.randint(0, n_nodes, (120,), generator=gen)
    a = centres[a_nodes] + torch.randn(300, dims, generator=gen)
    b = centres[b_nodes] + 1.5 * torch.randn(120, dims, generator=gen)
    weights = centres + 0.1
    lam, cpu = 0.01, torch.device("cpu")
    old = fit_node_gaussians(a, a_nodes, n_nodes, weights, lam, shrinkage, cpu)
    merged = merge_node_statistics(old, b, b_nodes, weights, lam, shrinkage, Monitor())
    union = fit_node_gaussians(
        torch.cat([a, b]), torch.cat([a_nodes, b_nodes]), n_nodes, weights, lam, shrinkage, cpu
    )
    assert torch.equal(merged.counts, union.counts)
    torch.testing.assert_close(merged.means, union.means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged.inverse_cholesky, union.inverse_cholesky, rtol=2e-3, atol=2e-3)


def test_update_lowers_the_added_images_scores_and_keeps_the_rest(fitted, demo_root):
    data = somad.open_dataset(demo_root)
    added = [s.path for s in data.test if s.label == 1][:4]
    others = [s.path for s in data.test if s.label == 1][4:8]
    before = somad.score_paths(fitted, added)[0]
    weights_before = fitted.som_weights.clone()
    updated = fitted.update(added)
    after = somad.score_paths(updated, added)[0]
    assert all(b.score > a.score for b, a in zip(before, after, strict=True))
    assert np.mean([a.score for a in after]) < 0.8 * np.mean([b.score for b in before])
    assert torch.equal(fitted.som_weights, weights_before)  # the old model is unchanged
    assert not torch.equal(updated.som_weights, weights_before)
    assert updated.training_summary["n_images"] == fitted.training_summary["n_images"] + 4
    assert updated.training_summary["updates"][-1]["n_images"] == 4
    assert updated.thresholds == fitted.thresholds
    # images the update did not see still score, and the other defect type still scores above the good ones
    good = [s.path for s in data.test if s.label == 0]
    still = [r.score for r in somad.score_paths(updated, others + good)[0]]
    assert np.mean(still[: len(others)]) > np.mean(still[len(others) :])


def test_update_refuses_other_methods(demo_root):
    data = somad.open_dataset(demo_root)
    cfg = somad.SomadConfig(
        features=somad.FeatureConfig(backbone="resnet18", image_size=64, dims=16, random_init=True),
        device="cpu",
    )
    model = somad.fit(data, cfg, method="padim")
    with pytest.raises(somad.ConfigError, match="SOMAD"):
        model.update([data.train[0].path])


def test_update_command_writes_a_new_model(demo_root, tmp_path, capsys):
    model = tmp_path / "m.somad"
    assert main(["fit", str(demo_root), "--out", str(model), *FAST_FIT]) == 0
    original = model.read_bytes()
    extra = str(demo_root / "test" / "good")
    assert main(["update", str(model), extra, "--out", str(tmp_path / "u.somad")]) == 0
    assert "updated with 4 images" in capsys.readouterr().out
    assert model.read_bytes() == original
    updated = somad.load_any_model(tmp_path / "u.somad")
    assert updated.training_summary["n_images"] == 12 + 4
    rc = main(["update", str(model), extra, "--out", str(tmp_path / "u.somad")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["update", str(model), extra, "--out", str(model), "--overwrite"])
    assert rc == 2 and model.read_bytes() == original  # never written over its own input
