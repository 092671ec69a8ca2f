from __future__ import annotations

import pytest
import torch

from monai_cae.networks import (
    CAEDecoder,
    CAEEncoder,
    ConditionalDecoder,
    ContrastiveAutoEncoder,
    ProjectionHead,
    PrototypeAssignment,
    encoder_feature_shapes,
)

SIZES_2D = [28, 64, 128, 224, 256]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("img_size", SIZES_2D)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_autoencoder_shapes_2d(img_size: int, in_channels: int) -> None:
    net = ContrastiveAutoEncoder(in_channels=in_channels, img_size=img_size, latent_size=128, projection_size=32)
    x = torch.rand(2, in_channels, img_size, img_size)
    h = net(x)
    z, y = net.project(h), net.decode(h)
    torch.testing.assert_close(h, net.encode(x))
    assert h.shape == (2, 128)
    assert z.shape == (2, 32)
    assert y.shape == x.shape


@pytest.mark.parametrize("img_size,expected_pre_pool", [(28, 3), (64, 8), (128, 16), (224, 28), (256, 32), (37, 4)])
def test_feature_shapes_match_the_convolutions(img_size: int, expected_pre_pool: int) -> None:
    shapes, pooled = encoder_feature_shapes(img_size, spatial_dims=2, num_layers=3)
    assert shapes[-1] == (expected_pre_pool, expected_pre_pool)
    assert pooled == (expected_pre_pool // 2, expected_pre_pool // 2)
    encoder = CAEEncoder(img_size=img_size, channels=(4, 8, 16))
    features = encoder.convs(torch.zeros(1, 1, img_size, img_size))
    assert tuple(features.shape[2:]) == shapes[-1]
    assert encoder.fc.in_features == 16 * pooled[0] * pooled[1]


def test_published_encoder_layout() -> None:
    encoder = CAEEncoder()
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 3
    assert [c.stride for c in convs] == [(2, 2)] * 3
    assert sum(isinstance(m, torch.nn.GELU) for m in encoder.modules()) == 3
    assert isinstance(encoder.pool, torch.nn.AvgPool2d) and encoder.pool.kernel_size == 2
    assert encoder.fc.out_features == 128


def test_non_square_and_3d() -> None:
    net = ContrastiveAutoEncoder(img_size=(28, 64), channels=(8, 16, 16))
    x = torch.rand(2, 1, 28, 64)
    assert net.decode(net(x)).shape == x.shape
    net3d = ContrastiveAutoEncoder(spatial_dims=3, in_channels=2, img_size=32, channels=(4, 8, 8), latent_size=16)
    x3 = torch.rand(2, 2, 32, 32, 32)
    h = net3d(x3)
    y = net3d.decode(h)
    assert h.shape == (2, 16) and y.shape == x3.shape


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1},
        {"channels": ()},
        {"img_size": 4},
        {"img_size": 0},
        {"latent_size": 0},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ContrastiveAutoEncoder(**kwargs)


def test_wrong_input_shape_names_the_shape() -> None:
    net = ContrastiveAutoEncoder()
    with pytest.raises(ValueError, match=r"\[28, 28\]"):
        net(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="latent"):
        net.decode(torch.rand(2, 7))


def test_projection_head_layers() -> None:
    head = ProjectionHead(128, 64, 16, num_layers=3)
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [64, 64, 16]
    assert head(torch.rand(5, 128)).shape == (5, 16)
    with pytest.raises(ValueError):
        ProjectionHead(num_layers=0)


def test_prototype_assignment_against_reference() -> None:
    torch.manual_seed(0)
    prototypes = torch.randn(3, 8)
    h = torch.randn(5, 8)
    block = PrototypeAssignment(8, temperature=0.2)
    with pytest.raises(RuntimeError, match="no prototypes"):
        block(h)
    block.set_prototypes(prototypes)
    expected_sim = torch.tensor(
        [[float(torch.dot(a, b) / (a.norm() * b.norm())) for b in prototypes] for a in h]
    )
    torch.testing.assert_close(block.similarity(h), expected_sim)
    probabilities = block(h)
    torch.testing.assert_close(probabilities, torch.softmax(expected_sim / 0.2, dim=1))
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5))
    # the nearest prototype (by cosine) gets the highest probability
    assert torch.equal(probabilities.argmax(1), expected_sim.argmax(1))
    with pytest.raises(ValueError, match=r"\(K, 8\)"):
        block.set_prototypes(torch.zeros(4, 7))


def test_conditional_decoder_starts_from_the_trained_decoder() -> None:
    torch.manual_seed(0)
    net = ContrastiveAutoEncoder(channels=(8, 16, 16), latent_size=32)
    net.set_prototypes(torch.randn(4, 32))
    h = net.encode(torch.rand(6, 1, 28, 28))
    # with the condition's inputs zeroed, the conditional decoder reproduces the warm-up decoder exactly
    torch.testing.assert_close(net.decode_conditional(h), net.decode(h))
    probabilities, similarity = net.assign(h)
    assert probabilities.shape == similarity.shape == (6, 4)
    one_hot = torch.nn.functional.one_hot(torch.full((6,), 2), 4).float()
    assert net.decode_conditional(h, one_hot).shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="assignment"):
        net.decode_conditional(h, torch.zeros(6, 3))


def test_conditional_decoder_learns_from_the_assignment() -> None:
    decoder = ConditionalDecoder(channels=(4, 8, 8), latent_size=8, condition_size=4)
    decoder.assignment.set_prototypes(torch.eye(2, 8))
    h = torch.zeros(2, 8)
    assignment = torch.eye(2)
    target = torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(decoder(h, assignment), target)
        loss.backward()
        optimizer.step()
    # identical latents decode to different images only through the assignment
    assert loss.item() < 0.01


def test_conditional_parameters_do_not_depend_on_the_number_of_prototypes() -> None:
    net = ContrastiveAutoEncoder(channels=(8, 16, 16), latent_size=32)
    shapes_before = {k: v.shape for k, v in net.named_parameters()}
    net.set_prototypes(torch.randn(3, 32))
    net.set_prototypes(torch.randn(7, 32))
    assert {k: v.shape for k, v in net.named_parameters()} == shapes_before
    assert net.num_prototypes == 7


def test_state_dict_with_prototypes_loads_into_a_fresh_model() -> None:
    net = ContrastiveAutoEncoder(channels=(8, 16, 16), latent_size=32)
    net.set_prototypes(torch.randn(5, 32))
    fresh = ContrastiveAutoEncoder(channels=(8, 16, 16), latent_size=32)
    assert fresh.num_prototypes == 0
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh.prototypes, net.prototypes)
    h = torch.randn(3, 32)
    torch.testing.assert_close(fresh.decode_conditional(h), net.decode_conditional(h))


def test_methods_before_prototypes_raise() -> None:
    net = ContrastiveAutoEncoder()
    with pytest.raises(RuntimeError, match="no prototypes"):
        net.assign(torch.zeros(1, 128))
    with pytest.raises(RuntimeError, match="no prototypes"):
        net.decode_conditional(torch.zeros(1, 128))
    with pytest.raises(ValueError, match=r"\(K, 128\)"):
        net.set_prototypes(torch.zeros(3, 64))


@pytest.mark.parametrize("with_prototypes", [False, True])
@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_export(with_prototypes: bool, export: str, tmp_path) -> None:
    net = ContrastiveAutoEncoder(img_size=28).eval()
    if with_prototypes:
        net.set_prototypes(torch.randn(3, 128))
    x = torch.rand(4, 1, 28, 28)
    exported = torch.jit.script(net) if export == "script" else torch.jit.trace(net, x)
    path = tmp_path / "model.ts"
    torch.jit.save(exported, str(path))
    loaded = torch.jit.load(str(path))
    h = net(x)
    torch.testing.assert_close(loaded(x), h)
    if export == "script":  # tracing records forward only; scripting also exports the methods inference calls
        torch.testing.assert_close(loaded.encode(x), h)
        torch.testing.assert_close(loaded.project(h), net.project(h))
        torch.testing.assert_close(loaded.decode(h), net.decode(h))
        if with_prototypes:
            for got, expected in zip(loaded.assign(h), net.assign(h)):
                torch.testing.assert_close(got, expected)
            torch.testing.assert_close(loaded.decode_conditional(h), net.decode_conditional(h))


@pytest.mark.parametrize("device", DEVICES)
def test_forward_backward_on_device(device: str) -> None:
    net = ContrastiveAutoEncoder().to(device)
    x = torch.rand(8, 1, 28, 28, device=device)
    h = net(x)
    z, y = net.project(h), net.decode(h)
    (z.pow(2).mean() + (y - x).pow(2).mean()).backward()
    for name, parameter in net.named_parameters():
        # the warm-up objective never reaches the conditional decoder, so phase 1 cannot move it
        assert (parameter.grad is None) == name.startswith("conditional_decoder."), name


def test_decoder_alone_matches_encoder_symmetry() -> None:
    decoder = CAEDecoder(img_size=28, channels=(32, 64, 128))
    deconvs = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [64, 32, 1]
    assert decoder(torch.rand(2, 128)).shape == (2, 1, 28, 28)
