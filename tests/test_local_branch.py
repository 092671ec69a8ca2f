"""Local discriminative branch (Chen et al.): network shapes, unit norms, back-compatibility, losses against float64
references, and the trainer's ``local`` loss part."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_cae.engines import load_model
from monai_cae.losses import LocalClusteringLoss, LocalDiscriminationLoss, LocalEmbeddingLoss, sample_neighbour_pairs
from monai_cae.networks.blocks import PixelClustering, PixelEmbeddingHead
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.reports import cluster_overlay_png


@pytest.mark.parametrize("spatial_dims,size", [(2, 28), (2, 64), (3, 16)])
def test_local_outputs_have_image_size_and_unit_norm(one_thread, spatial_dims: int, size: int) -> None:
    network = ContrastiveAutoEncoder(spatial_dims, img_size=size, local_branch=True, local_embedding_dim=8,
                                     local_clusters=5)
    x = torch.rand(2, 1, *([size] * spatial_dims))
    embedding, similarity = network.local(x)
    assert embedding.shape == (2, 8, *([size] * spatial_dims))
    assert similarity.shape == (2, 5, *([size] * spatial_dims))
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2, *([size] * spatial_dims)))
    assert similarity.abs().max() <= 1 + 1e-5
    cluster_map = network.cluster_map(x)
    assert cluster_map.shape == (2, *([size] * spatial_dims)) and cluster_map.max() < 5


def test_centres_stay_unit_vectors_after_updates() -> None:
    clustering = PixelClustering(4, 3)
    optimizer = torch.optim.SGD(clustering.parameters(), lr=10.0)
    clustering(F.normalize(torch.randn(2, 4, 5, 5), dim=1)).sum().backward()
    optimizer.step()
    torch.testing.assert_close(clustering.unit_centres.norm(dim=1), torch.ones(3))
    embedding = clustering.unit_centres.detach()[[2, 0]].reshape(2, 4, 1, 1)
    assert clustering.assign(embedding).flatten().tolist() == [2, 0]


def test_bad_arguments_raise_naming_the_value() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        PixelEmbeddingHead(2, 3, kernel_size=4)
    with pytest.raises(ValueError, match="num_clusters"):
        PixelClustering(8, 1)
    with pytest.raises(ValueError, match=r"\(B, 8"):
        PixelClustering(8, 3)(torch.zeros(1, 7, 4, 4))
    with pytest.raises(ValueError, match="expected input"):
        ContrastiveAutoEncoder(local_branch=True).local(torch.zeros(1, 1, 27, 27))
    with pytest.raises(RuntimeError, match="no local branch"):
        ContrastiveAutoEncoder().local(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="radius"):
        LocalEmbeddingLoss(radius=0)
    with pytest.raises(ValueError, match="K >= 2"):
        LocalClusteringLoss()(torch.zeros(2, 1, 4, 4))


def test_without_the_option_the_model_and_old_checkpoints_are_unchanged(tmp_path) -> None:
    torch.manual_seed(0)
    plain = ContrastiveAutoEncoder()
    assert plain.local_branch is None and not any("local" in key for key in plain.state_dict())
    torch.manual_seed(0)
    local = ContrastiveAutoEncoder(local_branch=True)
    # the branch is built last, so the image-level parameters are drawn as before
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(local.state_dict()[key], value)
    # a trained model as the bundle saves it, with prototypes, from a network without the branch: the format of every
    # checkpoint written before the option existed
    plain.set_prototypes(torch.randn(3, plain.latent_size))
    torch.save({"model": plain.state_dict()}, tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)["model"]
    ContrastiveAutoEncoder().load_state_dict(state)  # strict
    missing = local.load_state_dict(state, strict=False).missing_keys
    assert missing and all(key.startswith("local_branch.") for key in missing)


@pytest.mark.parametrize("trained_with_branch", [True, False])
def test_load_model_names_a_local_branch_mismatch(tmp_path, trained_with_branch: bool) -> None:
    trained = ContrastiveAutoEncoder(local_branch=trained_with_branch)
    trained.set_prototypes(torch.randn(3, trained.latent_size))
    torch.save({"model": trained.state_dict()}, tmp_path / "model.pt")
    loaded = load_model(ContrastiveAutoEncoder(local_branch=trained_with_branch), str(tmp_path / "model.pt"), "cpu")
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    with pytest.raises(ValueError, match=f"--local_branch {trained_with_branch}"):
        load_model(ContrastiveAutoEncoder(local_branch=not trained_with_branch), str(tmp_path / "model.pt"), "cpu")


def reference_embedding_loss(embedding: np.ndarray, anchors: np.ndarray, positives: np.ndarray, tau: float) -> float:
    flat = np.moveaxis(embedding, 1, -1).reshape(-1, embedding.shape[1]).astype(np.float64)
    a = flat[anchors] / np.linalg.norm(flat[anchors], axis=1, keepdims=True)
    p = flat[positives] / np.linalg.norm(flat[positives], axis=1, keepdims=True)
    total = 0.0
    n = len(anchors)
    for i in range(n):
        row = [a[i] @ p[j] / tau for j in range(n)]
        col = [p[i] @ a[j] / tau for j in range(n)]
        total += 0.5 * (math.log(sum(math.exp(v) for v in row)) - row[i])
        total += 0.5 * (math.log(sum(math.exp(v) for v in col)) - col[i])
    return total / n


@pytest.mark.parametrize("shape,num_pixels,radius,tau", [((2, 4, 6, 6), 8, 1, 0.5), ((3, 8, 5, 7), 20, 2, 0.1),
                                                         ((1, 3, 4, 4, 4), 12, 1, 1.0)])
def test_embedding_loss_matches_reference(shape, num_pixels: int, radius: int, tau: float) -> None:
    torch.manual_seed(0)
    embedding = torch.randn(*shape, dtype=torch.float64)
    pairs = sample_neighbour_pairs((shape[0], *shape[2:]), num_pixels, radius)
    loss = LocalEmbeddingLoss(tau, num_pixels, radius)(embedding, pairs)
    expected = reference_embedding_loss(embedding.numpy(), pairs[0].numpy(), pairs[1].numpy(), tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_embedding_loss_is_finite_at_low_temperature_and_has_correct_gradients() -> None:
    torch.manual_seed(0)
    embedding = F.normalize(torch.randn(2, 4, 5, 5), dim=1)
    assert torch.isfinite(LocalEmbeddingLoss(1e-4, 16)(embedding))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    pairs = sample_neighbour_pairs((2, 4, 4), 10, 1)
    # the loss computes in float32; gradcheck its math on float64 through the same function
    loss = LocalEmbeddingLoss(0.5, 10)
    assert torch.autograd.gradcheck(lambda e: loss(e.double(), pairs).double(), (x,), eps=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 5), (2, 4, 3, 3, 2)])
def test_neighbour_pairs_are_distinct_neighbours_in_the_same_image(shape) -> None:
    batch, spatial = shape[0], shape[2:]
    anchors, positives = sample_neighbour_pairs((batch, *spatial), 500, 1, generator=torch.Generator().manual_seed(0))
    per_image = int(np.prod(spatial))
    assert (anchors // per_image == positives // per_image).all()
    a = np.stack(np.unravel_index((anchors % per_image).numpy(), spatial), 1)
    p = np.stack(np.unravel_index((positives % per_image).numpy(), spatial), 1)
    chebyshev = np.abs(a - p).max(1)
    assert (chebyshev == 1).all()


def reference_clustering_loss(similarity: np.ndarray, tau: float, beta: float) -> tuple[float, float]:
    s = np.moveaxis(similarity.astype(np.float64), 1, -1).reshape(-1, similarity.shape[1])
    q = np.exp(s / tau) / np.exp(s / tau).sum(1, keepdims=True)
    compactness = 1 - np.mean([sum(q[i, k] * s[i, k] for k in range(s.shape[1])) for i in range(len(s))])
    usage = q.mean(0)
    balance = math.log(s.shape[1]) + sum(u * math.log(u) for u in usage if u > 0)
    return compactness, compactness + beta * balance


@pytest.mark.parametrize("shape,tau,beta", [((2, 3, 4, 4), 0.1, 1.0), ((1, 5, 6), 0.5, 0.3), ((2, 2, 3, 3, 3), 1.0, 2.0)])
def test_clustering_loss_matches_reference(shape, tau: float, beta: float) -> None:
    torch.manual_seed(0)
    similarity = torch.rand(*shape, dtype=torch.float64) * 2 - 1
    parts = LocalClusteringLoss(tau, beta)(similarity)
    compactness, total = reference_clustering_loss(similarity.numpy(), tau, beta)
    assert parts["compactness"].item() == pytest.approx(compactness, rel=1e-5)
    assert parts["total"].item() == pytest.approx(total, rel=1e-5)


def test_clustering_loss_penalises_collapse_and_has_correct_gradients() -> None:
    collapsed = torch.zeros(1, 3, 4, 4)
    collapsed[:, 0] = 1.0
    parts = LocalClusteringLoss(0.01)(collapsed)
    assert parts["balance"].item() == pytest.approx(math.log(3), abs=1e-4)
    balanced = torch.zeros(1, 3, 1, 3)
    for k in range(3):
        balanced[0, k, 0, k] = 1.0
    assert LocalClusteringLoss(0.01)(balanced)["balance"].item() == pytest.approx(0.0, abs=1e-4)
    x = (torch.rand(2, 3, 3, 3, dtype=torch.float64) * 2 - 1).requires_grad_()
    loss = LocalClusteringLoss(0.5)
    assert torch.autograd.gradcheck(lambda s: loss(s)["total"].double(), (x,), eps=1e-3, atol=1e-3)


def test_trainer_logs_the_local_part_and_trains_the_branch(one_thread) -> None:
    from monai_cae.engines import CAETrainer
    from monai_cae.losses import CAELoss
    from monai_cae.transforms import BatchPositivePair

    torch.manual_seed(0)
    network = ContrastiveAutoEncoder(local_branch=True, local_clusters=3)
    images = torch.rand(16, 1, 28, 28)
    loader = [{"image": images[:8]}, {"image": images[8:]}]
    before = network.local_branch.clustering.centres.detach().clone()
    trainer = CAETrainer(
        "cpu", 1, loader, network, torch.optim.Adam(network.parameters(), 1e-3), CAELoss(),
        BatchPositivePair(seed=0), warmup_epochs=1, local_loss=LocalDiscriminationLoss(num_pixels=64),
        local_weight=0.5,
    )
    trainer.run()
    output = trainer.state.output
    assert output["local"] > 0 and output["loss"] > output["contrastive"]
    assert not torch.equal(before, network.local_branch.clustering.centres)
    with pytest.raises(ValueError, match="local branch"):
        CAETrainer("cpu", 1, loader, ContrastiveAutoEncoder(), torch.optim.Adam(network.parameters()), CAELoss(),
                   BatchPositivePair(seed=0), 1, local_loss=LocalDiscriminationLoss())


def test_overlay_png_and_report_section() -> None:
    from PIL import Image
    import io

    cluster_map = np.zeros((28, 28), np.int64)
    cluster_map[:, 14:] = 1
    png = cluster_overlay_png(np.full((28, 28), 0.5), cluster_map, scale=2)
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert picture.shape == (56, 114, 3)
    left, right = picture[10, 58 + 2], picture[10, 58 + 40]  # tinted half: two clusters, two colours
    assert not np.array_equal(left, right)
    with pytest.raises(ValueError, match="same size"):
        cluster_overlay_png(np.zeros((28, 28)), np.zeros((27, 28), np.int64))
