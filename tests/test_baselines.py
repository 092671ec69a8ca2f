from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet18

from monai_cae.clustering import elbow_kmeans, l2_normalize
from monai_cae.evaluation import (
    evaluate_representation,
    kmeans_assigner,
    pca_features,
    prototype_assigner,
    resnet_features,
    resnet_predict,
    train_supervised_resnet18,
)
from monai_cae.networks.nets import ContrastiveAutoEncoder


pytestmark = pytest.mark.usefixtures("one_thread")


def square_images(n: int, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Noise images with a bright square top-left (class 0) or bottom-right (class 1): clearly separable."""
    rng = np.random.default_rng(seed)
    images = 0.1 * rng.random((n, 1, size, size), dtype=np.float32)
    labels = np.arange(n) % 2
    side = size // 3
    for i, label in enumerate(labels):
        if label == 0:
            images[i, 0, :side, :side] += 1.0
        else:
            images[i, 0, -side:, -side:] += 1.0
    return torch.from_numpy(images), labels


# --- PCA sanity floor ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_components", [1, 5, 12])
@pytest.mark.parametrize("image_shape", [(1, 4, 4), (2, 3, 5)])
def test_pca_features_match_an_svd_of_the_centred_training_pixels(n_components: int, image_shape: tuple) -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((30, *image_shape)).astype(np.float32)
    val = rng.standard_normal((7, *image_shape)).astype(np.float32)
    test = rng.standard_normal((4, *image_shape)).astype(np.float32)
    out = pca_features(train, val, test, n_components=n_components)
    assert [o.shape for o in out] == [(30, n_components), (7, n_components), (4, n_components)]
    assert all(o.dtype == np.float32 for o in out)
    # reference: principal axes of the training pixels only; the other splits are centred with the *training* mean
    flat = train.reshape(30, -1).astype(np.float64)
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    for data, got in zip((train, val, test), out):
        expected = (data.reshape(len(data), -1) - mean) @ vt[:n_components].T
        signs = np.sign(np.sum(expected * got, axis=0))  # principal axes are defined up to sign
        np.testing.assert_allclose(got, expected * signs, atol=1e-4)


@pytest.mark.parametrize(
    "arrays, n_components",
    [
        ((np.zeros((5, 1, 2, 2)),), 6),  # more components than samples
        ((np.zeros((10, 1, 2, 2)),), 5),  # more components than pixels
        ((np.zeros((10, 1, 2, 2)),), 0),
        ((np.zeros((10, 1, 2, 2)), np.zeros((3, 1, 2, 3))), 2),  # another image size
        ((np.zeros(10),), 1),  # not a batch of images
    ],
)
def test_pca_features_bad_input_raises(arrays: tuple, n_components: int) -> None:
    with pytest.raises(ValueError):
        pca_features(*arrays, n_components=n_components)


def test_pca_kmeans_floor_through_the_protocol_separates_the_squares() -> None:
    images, labels = square_images(60, size=12)
    test_images, test_labels = square_images(20, size=12, seed=1)
    train_f, test_f = pca_features(images.numpy(), test_images.numpy(), n_components=4)
    result = elbow_kmeans(train_f, k_values=[2, 3], progress=False)
    results = evaluate_representation(
        train_f, labels, {"test": (test_f, test_labels)}, kmeans_assigner(result), result.k, linear_epochs=5
    )
    assert results["test"]["stat"]["accuracy"] == 1.0


# --- supervised ResNet-18 --------------------------------------------------------------------------------------------


def test_supervised_resnet18_learns_separable_squares() -> None:
    images, labels = square_images(64)
    model = train_supervised_resnet18(images, labels, epochs=2, batch_size=32, lr=3e-3, progress=False)
    predictions, probabilities = resnet_predict(model, images)
    assert model.fc.out_features == 2
    assert np.mean(predictions == labels) >= 0.95


def test_supervised_resnet18_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    images, labels = square_images(24, size=16)
    state = torch.get_rng_state()
    first = train_supervised_resnet18(images, labels, epochs=1, batch_size=8, seed=3, progress=False).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    second = train_supervised_resnet18(images, labels, epochs=1, batch_size=8, seed=3, progress=False).state_dict()
    other = train_supervised_resnet18(images, labels, epochs=1, batch_size=8, seed=4, progress=False).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


@pytest.mark.parametrize(
    "bias_downsample, source_classes",
    [(True, 10), (False, 1000)],  # a MONAI checkpoint, and a torchvision/ImageNet-like one (no shortcut bias)
)
def test_transfer_variant_averages_conv1_and_freezes_the_backbone(
    tmp_path, bias_downsample: bool, source_classes: int
) -> None:
    torch.manual_seed(11)
    source = resnet18(spatial_dims=2, n_input_channels=3, num_classes=source_classes, bias_downsample=bias_downsample)
    # make the running statistics non-trivial, so that "kept" is distinguishable from "reset" or "updated"
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
    saved = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / "resnet18_rgb.pt"
    torch.save(saved, path)

    images, labels = square_images(16, size=16)
    model = train_supervised_resnet18(images, labels, epochs=1, batch_size=8, weights_path=str(path), progress=False)
    trained = model.state_dict()
    expected_conv1 = saved["conv1.weight"].mean(dim=1, keepdim=True)
    assert trained["conv1.weight"].shape == (64, 1, 7, 7)
    torch.testing.assert_close(trained["conv1.weight"], expected_conv1)
    # the kernel applied to a grey image equals the RGB kernel applied to three copies of it, divided by 3
    grey = images[:2]
    rgb_out = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), saved["conv1.weight"], padding=3)
    torch.testing.assert_close(model.conv1(grey) * 3, rgb_out, atol=1e-5, rtol=1e-4)

    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["fc.bias", "fc.weight"]
    assert model.fc.out_features == 2
    assert ("layer2.0.downsample.0.bias" in trained) == bias_downsample
    for key in saved:
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        assert torch.equal(trained[key], saved[key]), key  # weights and batch-norm statistics untouched by training


def test_transfer_variant_rejects_weights_that_do_not_fit(tmp_path) -> None:
    images, labels = square_images(8, size=16)
    two_channel = resnet18(spatial_dims=2, n_input_channels=2, num_classes=2).state_dict()
    torch.save(two_channel, tmp_path / "two.pt")
    with pytest.raises(ValueError, match="first convolution"):
        train_supervised_resnet18(images, labels, epochs=1, weights_path=str(tmp_path / "two.pt"), progress=False)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks"):
        train_supervised_resnet18(images, labels, epochs=1, weights_path=str(tmp_path / "partial.pt"), progress=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(images=torch.zeros(4, 3, 8, 8), labels=np.array([0, 1, 0, 1])),
        dict(images=torch.zeros(4, 1, 8, 8), labels=np.array([0, 1, 0])),
        dict(images=torch.zeros(4, 1, 8, 8), labels=np.array([0, 0, 0, 0])),
        dict(images=torch.zeros(4, 1, 8, 8), labels=np.array([0, 1, 0, 1]), epochs=0),
        dict(images=torch.zeros(4, 1, 8, 8), labels=np.array([0, 1, 0, 1]), lr=-1.0),
    ],
)
def test_train_supervised_resnet18_bad_input_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        train_supervised_resnet18(progress=False, **kwargs)


@pytest.mark.parametrize("batch_size", [3, 512])
def test_resnet_features_are_the_input_of_fc_and_leave_the_model_unchanged(batch_size: int) -> None:
    torch.manual_seed(0)
    model = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3).train()
    fc = model.fc
    images = torch.rand(7, 1, 16, 16)
    features = resnet_features(model, images, batch_size=batch_size)
    assert features.shape == (7, 512) and features.dtype == np.float32
    assert model.fc is fc and isinstance(model.fc, torch.nn.Linear)
    assert len(model.fc._forward_pre_hooks) == 0 and len(model.fc._forward_hooks) == 0
    assert model.training and model.bn1.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        logits = model(images)
    np.testing.assert_allclose(features @ fc.weight.detach().numpy().T + fc.bias.detach().numpy(), logits.numpy(),
                               atol=1e-4, rtol=1e-4)
    predictions, probabilities = resnet_predict(model, images, batch_size=batch_size)
    assert probabilities.shape == (7, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(predictions, logits.argmax(1).numpy())


def test_resnet_features_and_predict_reject_bad_images() -> None:
    model = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    for bad in (torch.zeros(2, 16, 16), torch.zeros(2, 3, 16, 16)):
        with pytest.raises(ValueError):
            resnet_features(model, bad)
        with pytest.raises(ValueError):
            resnet_predict(model, bad)


# --- assigners -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_kmeans_assigner_matches_the_kmeans_model(normalize: bool) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4], [3, 3, 0]], dtype=np.float32)
    features = np.concatenate([c * rng.uniform(0.5, 2.0) + 0.3 * rng.standard_normal((20, 3)) for c in centres])
    features = features.astype(np.float32)
    result = elbow_kmeans(features, k_values=[2, 3, 4], normalize=normalize, progress=False)
    clusters, soft = kmeans_assigner(result)(features)
    data = l2_normalize(features) if normalize else features
    expected = np.argmin(((data[:, None, :] - result.centroids[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(clusters, expected)
    assert soft is None


def test_prototype_assigner_is_the_most_cosine_similar_prototype() -> None:
    torch.manual_seed(0)
    network = ContrastiveAutoEncoder(img_size=16, channels=(4, 8, 8), latent_size=6, projection_size=4)
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 6)).astype(np.float32)
    network.set_prototypes(torch.from_numpy(prototypes))
    # latents at different scales: cosine ignores the norm, Euclidean distance would not
    latents = (rng.standard_normal((25, 6)) * rng.uniform(0.1, 10.0, (25, 1))).astype(np.float32)
    clusters, probabilities = prototype_assigner(network)(latents)
    cosine = l2_normalize(latents) @ l2_normalize(prototypes).T
    np.testing.assert_array_equal(clusters, cosine.argmax(1))
    assert probabilities.shape == (25, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(1), clusters)
    temperature = network.conditional_decoder.assignment.temperature
    expected = np.exp(cosine / temperature) / np.exp(cosine / temperature).sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
