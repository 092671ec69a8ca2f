"""Distributed training and sharded inference: helpers in-process, and real ``torchrun`` jobs of 2 CPU ranks (gloo)."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import ignite.distributed as idist
import torch

from monai_cae.data import make_dataset
from monai_cae.distributed import broadcast_matrix, local_batch_size
from monai_cae.engines import (
    CAEStep,
    CAETrainer,
    assign_strata,
    assign_strata_sharded,
    load_model,
    shard_range,
    write_assignments,
)
from monai_cae.losses import CAELoss
from monai_cae.networks.nets import ContrastiveAutoEncoder

from conftest import REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "bundles", "cae", "configs")
TINY = {"network_def#channels": [4, 8, 8], "latent_size": 16}


def tiny_network(seed: int = 0, prototypes: int = 3) -> ContrastiveAutoEncoder:
    torch.manual_seed(seed)
    network = ContrastiveAutoEncoder(channels=(4, 8, 8), latent_size=16).eval()
    network.set_prototypes(torch.randn(prototypes, 16))
    return network


def item_dataset(n: int = 23) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    return [
        {"image": torch.rand(1, 28, 28, generator=generator), "index": i, "id": f"img{i}", "label": i % 2}
        for i in range(n)
    ]


# ---------------------------------------------------------------- in-process


def test_helpers_without_process_group() -> None:
    assert (idist.get_rank(), idist.get_world_size()) == (0, 1)
    assert local_batch_size(256) == 256
    with pytest.raises(ValueError, match="got 0"):
        local_batch_size(0)
    matrix = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(broadcast_matrix(matrix, "cpu"), matrix.float())
    with pytest.raises(ValueError, match="2D matrix, got None"):
        broadcast_matrix(None, "cpu")


@pytest.mark.parametrize("length", [0, 1, 7, 10, 23])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_the_dataset(length: int, world_size: int) -> None:
    blocks = [shard_range(length, r, world_size) for r in range(world_size)]
    assert [i for block in blocks for i in block] == list(range(length))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        shard_range(length, world_size, world_size)


def test_sharded_assignment_resumes_and_merges_into_dataset_order(tmp_path) -> None:
    network, dataset = tiny_network(), item_dataset()
    expected = assign_strata(network, torch.utils.data.DataLoader(dataset, batch_size=5), progress=False)
    batches = []
    network.encoder.register_forward_hook(lambda module, args, output: batches.append(len(output)))
    shard_dir = str(tmp_path / "shards")
    options = {"batch_size": 5, "progress": False, "world_size": 3, "fingerprint": "test"}
    # ranks 1 and 2 finish, then the job dies; rank 1 again finds its shard and embeds nothing
    for rank in (1, 2, 1):
        assert assign_strata_sharded(network, dataset, shard_dir, rank=rank, **options) is None
    assert sum(batches) == len(shard_range(23, 1, 3)) + len(shard_range(23, 2, 3))
    assert sorted(os.listdir(shard_dir)) == ["shard_1.npz", "shard_2.npz"]

    written = []
    result = assign_strata_sharded(network, dataset, shard_dir, write=written.append, rank=0, **options)
    assert sum(batches) == 23 and written == [result] and not os.path.exists(shard_dir)
    merged = result.assignment
    assert merged.ids == expected.ids and result.skipped == []
    for name in ("embeddings", "probabilities", "similarities", "indices", "labels"):
        np.testing.assert_allclose(getattr(merged, name), getattr(expected, name), rtol=1e-6, atol=1e-6)
    paths = write_assignments(merged, str(tmp_path / "out"))
    assert [int(row["index"]) for row in csv.DictReader(open(paths["assignments"]))] == list(range(23))


def test_stale_shards_are_recomputed(tmp_path) -> None:
    dataset, shard_dir = item_dataset(10), str(tmp_path / "shards")
    options = {"batch_size": 4, "progress": False, "rank": 1, "world_size": 2}
    old = assign_strata_sharded(tiny_network(0), dataset, shard_dir, **options)
    assert old is None and os.listdir(shard_dir) == ["shard_1.npz"]
    for network, fingerprint in ((tiny_network(1), ""), (tiny_network(0), "other split")):
        batches = []
        network.encoder.register_forward_hook(lambda module, args, output: batches.append(len(output)))
        assign_strata_sharded(network, dataset, shard_dir, fingerprint=fingerprint, **options)
        assert sum(batches) == 5, "a shard of another model or other inputs was reused"
    with pytest.raises(FileNotFoundError, match="shard_1.npz"):
        assign_strata_sharded(tiny_network(0), dataset, shard_dir, batch_size=4, progress=False, rank=0, world_size=2)


def test_trainer_rejects_a_step_module_over_another_network() -> None:
    network = tiny_network()
    with pytest.raises(ValueError, match="another network"):
        CAETrainer(
            "cpu", 2, [], network, torch.optim.SGD(network.parameters(), lr=0.1), CAELoss(), lambda x: (x, x), 1,
            step_module=CAEStep(tiny_network()),
        )


def test_step_module_gives_the_phase_outputs() -> None:
    network = tiny_network()
    views = torch.rand(2, 4, 1, 28, 28).unbind(0)
    z1, z2, y1, y2 = CAEStep(network)(*views, phase=1)
    torch.testing.assert_close(z1, network.project(network(views[0])))
    assert y2.shape == views[1].shape
    z1, z2, y1, _ = CAEStep(network)(*views, phase=2)
    assert z1 is None and z2 is None
    torch.testing.assert_close(y1, network.decode_conditional(network.encode(views[0])))
    y1.sum().backward()
    assert all(p.grad is None for p in network.encoder.parameters()), "phase 2 must not train the encoder"
    assert all(p.grad is not None for p in network.conditional_decoder.decoder.parameters())
    with pytest.raises(ValueError, match="phase must be 1 or 2, got 3"):
        CAEStep(network)(*views, phase=3)


def config_node(config: dict, path: list[str]):
    for part in path:
        config = config[int(part)] if isinstance(config, list) else config[part]
    return config


def test_multi_gpu_overrides_point_at_the_intended_handlers() -> None:
    train = json.load(open(os.path.join(CONFIGS, "train.json")))
    multi = json.load(open(os.path.join(CONFIGS, "multi_gpu_train.json")))
    rank0_only = {
        "train#handlers": {"monai.handlers.StatsHandler", "monai.handlers.TensorBoardStatsHandler",
                           "monai_cae.handlers.TensorBoardCAEHandler"},
        "validate#handlers": {"monai.handlers.StatsHandler", "monai.handlers.TensorBoardStatsHandler"},
        "train#checkpoint_handlers": {"monai.handlers.CheckpointSaver"},
        "": {"torch.utils.tensorboard.SummaryWriter"},  # top-level components: the writer the handlers share
    }
    for key in multi:
        *parents, leaf = key.split("#")
        if key.startswith(("train#sampler", "train#step_module")):
            continue  # components this file adds
        # every component the file reaches into exists in train.json (catches list indices that drifted)
        parent = config_node(train, parents)
        if leaf == "_disabled_":
            *section, index = parents
            assert parent["_target_"] in rank0_only["#".join(section)], f"{key} disables {parent['_target_']}"
    enabled = {
        h["_target_"] for i, h in enumerate(train["train"]["handlers"]) if f"train#handlers#{i}#_disabled_" not in multi
    }
    assert {"monai.handlers.LrScheduleHandler", "monai.handlers.ValidationHandler",
            "monai_cae.handlers.PrototypeDiscoveryHandler"} <= enabled


# ---------------------------------------------------------------- torchrun


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def bundle(workflow: str, configs: list[str], **overrides) -> list[str]:
    command = ["-m", "monai.bundle", "run", workflow, "--config_file", repr(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command


def write_json(path, content: dict) -> str:
    path.write_text(json.dumps(content))
    return str(path)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, shared_data) -> dict:
    """The same short run (3 phase-1 + 3 phase-2 steps of a global batch of 32) on 1 process and on 2 ranks."""
    root = tmp_path_factory.mktemp("distributed")
    dataset_dir = os.path.join(shared_data, "medmnist")
    # identical views (no augmentation), no shuffling, plain SGD with weight decay (which would also move the
    # parameters a phase leaves out if DDP gave them zero instead of no gradients)
    common = {
        **TINY,
        "train#dataset": "$torch.utils.data.Subset(monai_cae.data.make_dataset(@dataset_name, 'train', "
        "@dataset_dir, @img_size), list(range(96)))",
        "batch_size": 32, "max_epochs": 2, "warmup_epochs": 1, "val_interval": 2,
        "k_values": [2, 3, 4], "progress": False, "train#dataloader#shuffle": False,
        **{f"train#augmentation#{t}_prob": 0.0 for t in ("rotate", "blur", "noise", "flip", "crop")},
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.05,
                      "weight_decay": 0.01},
        "negative_queue_size": 16,
    }
    single = write_json(root / "single.json", common)
    multi = write_json(root / "multi.json", {**common, "train#sampler#shuffle": False})
    runs = {}
    for name, configs, launch in (
        ("single", [os.path.join(CONFIGS, "train.json"), single], None),
        ("multi", [os.path.join(CONFIGS, "train.json"), os.path.join(CONFIGS, "multi_gpu_train.json"), multi],
         torchrun),
    ):
        paths = {"output_dir": str(root / name), "model_dir": str(root / f"{name}_models"), "dataset_dir": dataset_dir}
        command = bundle("training", configs, **paths)
        if launch is None:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, capture_output=True,
                                    text=True, timeout=240)
            assert result.returncode == 0, result.stderr[-5000:]
        else:
            launch(*command)
        runs[name] = paths
    return {**runs, "dataset_dir": dataset_dir}


def scalars(run: dict) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(run["output_dir"], "tensorboard")).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in ("loss", "contrastive", "reconstruction")}


def model_state(run: dict) -> dict[str, torch.Tensor]:
    state = torch.load(os.path.join(run["model_dir"], "model.pt"), map_location="cpu", weights_only=True)
    return state.get("model", state)


@pytest.mark.slow
def test_two_ranks_follow_the_single_process_trajectory(two_runs: dict) -> None:
    single, multi = scalars(two_runs["single"]), scalars(two_runs["multi"])
    assert len(single["loss"]) == 6 and len(single["contrastive"]) == 3
    for tag in single:
        np.testing.assert_allclose(multi[tag], single[tag], rtol=1e-5, err_msg=tag)
    expected, got = model_state(two_runs["single"]), model_state(two_runs["multi"])
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)
    np.testing.assert_allclose(
        np.load(os.path.join(two_runs["multi"]["output_dir"], "prototypes", "prototypes.npy")),
        np.load(os.path.join(two_runs["single"]["output_dir"], "prototypes", "prototypes.npy")), atol=1e-5,
    )


@pytest.mark.slow
def test_only_rank_0_writes_logs_and_checkpoints(two_runs: dict) -> None:
    def files(run: dict) -> tuple[int, list[str]]:
        events = glob.glob(os.path.join(run["output_dir"], "tensorboard", "**", "events.out.tfevents.*"),
                           recursive=True)
        return len(events), sorted(os.listdir(os.path.join(run["output_dir"], "checkpoints")))

    assert files(two_runs["multi"]) == files(two_runs["single"])
    checkpoint = torch.load(
        os.path.join(two_runs["multi"]["output_dir"], "checkpoints", "checkpoint_epoch=2.pt"), weights_only=True
    )
    assert checkpoint["loss"]["contrastive.queue"].shape == (16, 64)


@pytest.mark.slow
def test_ntxent_gathered_over_two_ranks_is_the_global_batch_loss() -> None:
    result = torchrun(os.path.join(REPO_ROOT, "tests", "distributed_ntxent_check.py"))
    assert "NTXENT-GATHER-OK" in result.stdout


@pytest.mark.slow
def test_sharded_inference_equals_single_process(two_runs: dict, tmp_path) -> None:
    ckpt = os.path.join(two_runs["multi"]["model_dir"], "model.pt")
    overrides = write_json(tmp_path / "tiny.json", {**TINY, "batch_size": 100, "progress": False})
    output_dir = tmp_path / "out"
    configs = [os.path.join(CONFIGS, "inference.json"), os.path.join(CONFIGS, "multi_gpu_inference.json"), overrides]
    torchrun(*bundle("inference", configs, ckpt_path=ckpt, dataset_dir=two_runs["dataset_dir"], split="test",
                     output_dir=str(output_dir)))
    assert not os.path.exists(str(output_dir) + ".shards"), "the shards were not cleaned up after the merge"

    network = load_model(ContrastiveAutoEncoder(channels=(4, 8, 8), latent_size=16), ckpt, "cpu")
    dataset = make_dataset("pneumoniamnist", "test", two_runs["dataset_dir"])
    expected = assign_strata(network, torch.utils.data.DataLoader(dataset, batch_size=100), progress=False)
    np.testing.assert_allclose(np.load(output_dir / "embeddings.npy"), expected.embeddings, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader(open(output_dir / "assignments.csv")))
    assert [int(r["index"]) for r in rows] == list(range(len(dataset)))
    assert [int(r["cluster"]) for r in rows] == expected.clusters.tolist()
    assert [int(r["label"]) for r in rows] == expected.labels.tolist()
    probabilities = np.array([[float(r[f"prob_{j}"]) for j in range(network.num_prototypes)] for r in rows])
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-5)


@pytest.mark.slow
def test_sharded_archive_report_equals_the_single_process_report(two_runs: dict, shared_data, tmp_path) -> None:
    ckpt = os.path.join(two_runs["multi"]["model_dir"], "model.pt")
    overrides = write_json(tmp_path / "tiny.json", {**TINY, "batch_size": 16, "progress": False, "num_workers": 0})
    archive = os.path.join(shared_data, "real_cxr", "archive")
    reports = {}
    for name, extra in (("single", []), ("sharded", [os.path.join(CONFIGS, "multi_gpu_inference.json")])):
        configs = [os.path.join(CONFIGS, "inference.json"), *extra, overrides]
        command = bundle("inference", configs, ckpt_path=ckpt, input_dir=archive, output_dir=str(tmp_path / name))
        if extra:
            torchrun(*command)
        else:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
            subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        reports[name] = {
            file: open(tmp_path / name / file, "rb").read()
            for file in ("manifest.csv", "strata_per_image.csv", "strata_per_patient.csv", "assignments.csv")
        }
        report = json.load(open(tmp_path / name / "report.json"))
        report.pop("created")
        reports[name]["report.json"] = report
    assert reports["sharded"] == reports["single"] and reports["single"]["report.json"]["counts"]["processed"] == 110
    assert not os.path.exists(str(tmp_path / "sharded") + ".shards")
