"""End-to-end runs of the `cae` bundle through MONAI's real command line, on the shared PneumoniaMNIST."""

from __future__ import annotations

import csv
import filecmp
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.inferers import SimpleInferer

from monai_cae.data import MedMNISTDataset
from monai_cae.engines import StrataEvaluator, load_model
from monai_cae.handlers import latest_checkpoint
from monai_cae.networks.nets import ContrastiveAutoEncoder

from conftest import BRIEF_TRAINING, REPO_ROOT

CONFIGS = os.path.join("bundles", "cae", "configs")
SHORT_RUN = {
    "max_epochs": 4,
    "warmup_epochs": 2,
    "lr_warmup_epochs": 1,
    "val_interval": 2,
    "k_values": "[2,3,4]",
    "progress": False,
}


def bundle_command(workflow: str, config: str, **overrides) -> list[str]:
    command = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", os.path.join(CONFIGS, config)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command


def run_bundle(workflow: str, config: str, **overrides) -> subprocess.CompletedProcess:
    result = subprocess.run(
        bundle_command(workflow, config, **overrides), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data) -> dict:
    root = tmp_path_factory.mktemp("bundle")
    paths = {"output_dir": str(root / "train"), "model_dir": str(root / "models")}
    dataset_dir = os.path.join(shared_data, "medmnist")
    result = run_bundle("training", "train.json", dataset_dir=dataset_dir, **paths, **SHORT_RUN)
    return {**paths, "root": root, "dataset_dir": dataset_dir, "log": result.stdout + result.stderr}


def state_dict(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["model"] if "model" in state else state


def test_training_leaves_every_artefact(trained: dict) -> None:
    out, models = trained["output_dir"], trained["model_dir"]
    for name in ("elbow.json", "elbow.png", "kmeans.pkl", "k_selection.json", "k_elbow.png", "clustering.json",
                 "prototypes.npy", "embeddings.npy"):
        assert os.path.isfile(os.path.join(out, "prototypes", name)), name
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [f"checkpoint_epoch={e}.pt" for e in (2, 3, 4)]
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    elbow = json.load(open(os.path.join(out, "prototypes", "elbow.json")))
    assert elbow["k"] in (2, 3, 4) and len(elbow["silhouettes"]) == 3
    model = state_dict(os.path.join(models, "model.pt"))
    prototypes = np.load(os.path.join(models, "prototypes.npy"))
    assert prototypes.shape == (elbow["k"], 128)
    np.testing.assert_allclose(model["conditional_decoder.assignment.prototypes"].numpy(), prototypes, rtol=1e-6)
    assert "knn_accuracy" in trained["log"]
    assert "Prototype discovery at epoch 3" in trained["log"]


def test_training_with_a_scan_head_and_the_silhouette(tmp_path, shared_data) -> None:
    """The bundle ids reach the discovery handler: the SCAN head's unit prototypes, at the silhouette's k."""
    paths = {"output_dir": str(tmp_path / "train"), "model_dir": str(tmp_path / "models")}
    run_bundle("training", "train.json", dataset_dir=os.path.join(shared_data, "medmnist"), **paths,
               **{**SHORT_RUN, "max_epochs": 2, "warmup_epochs": 1, "val_interval": 5},
               clustering_method="scan", k_criterion="silhouette",
               clustering_options="{'epochs': 3, 'self_label_epochs': 1, 'heads': 2}")
    found = os.path.join(paths["output_dir"], "prototypes")
    selection = json.load(open(os.path.join(found, "k_selection.json")))
    clustering = json.load(open(os.path.join(found, "clustering.json")))
    assert selection["criterion"] == "silhouette" and clustering["method"] == "scan"
    assert selection["scores"][selection["k_values"].index(selection["k"])] == max(selection["scores"])
    prototypes = np.load(os.path.join(paths["model_dir"], "prototypes.npy"))
    assert prototypes.shape == (clustering["k"], 128) and clustering["k"] <= selection["k"]
    np.testing.assert_allclose(np.linalg.norm(prototypes, axis=1), 1.0, rtol=1e-5)
    model = state_dict(os.path.join(paths["model_dir"], "model.pt"))
    np.testing.assert_allclose(model["conditional_decoder.assignment.prototypes"].numpy(), prototypes, rtol=1e-6)


def test_loss_falls_and_is_logged_to_tensorboard(trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(trained["output_dir"], "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    for tag in ("loss", "contrastive", "reconstruction", "lr", "knn_accuracy"):
        assert tag in tags, tags
    contrastive = [e.value for e in events.Scalars("contrastive")]
    reconstruction = [e.value for e in events.Scalars("reconstruction")]
    steps_per_epoch = len(contrastive) // 2  # the phase-1 iterations
    assert np.mean(contrastive[-5:]) < np.mean(contrastive[:5])
    # the warm-up decoder improves in phase 1 and the conditional decoder goes on improving in phase 2
    assert np.mean(reconstruction[2 * steps_per_epoch - 5 : 2 * steps_per_epoch]) < np.mean(reconstruction[:5])
    assert np.mean(reconstruction[-5:]) < 0.7 * np.mean(reconstruction[:5])
    lr = [e.value for e in events.Scalars("lr")]
    assert lr[0] == pytest.approx(4e-5) and max(lr) == pytest.approx(1e-3)


def test_every_tensorboard_handler_writes_into_one_event_file(trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = os.path.join(trained["output_dir"], "tensorboard")
    (events_file,) = glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True)
    # the trainer's and the validator's stats handlers and the CAE handler share the config's summary_writer
    events = EventAccumulator(events_file).Reload()
    assert {"loss", "lr", "knn_accuracy"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["reconstruction (top: input view, bottom: output)_HW_0"]
    assert os.path.isfile(os.path.join(folder, "projector_config.pbtxt"))


def test_resume_after_kill_continues_where_it_stopped(trained: dict, tmp_path) -> None:
    paths = {"output_dir": str(tmp_path / "train"), "model_dir": str(tmp_path / "models")}
    overrides = {**SHORT_RUN, **paths, "dataset_dir": trained["dataset_dir"]}
    process = subprocess.Popen(
        bundle_command("training", "train.json", **overrides), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = os.path.join(paths["output_dir"], "checkpoints")
    deadline = time.time() + 240
    # kill as soon as the epoch-3 checkpoint appears: possibly while it is still being written
    while not os.path.exists(os.path.join(checkpoints, "checkpoint_epoch=3.pt")) and process.poll() is None:
        assert time.time() < deadline, "no epoch-3 checkpoint within the time limit"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(os.path.join(paths["model_dir"], "model.pt"))
    resume_from = latest_checkpoint(checkpoints)
    epoch = int(resume_from.rsplit("=", 1)[1].split(".")[0])
    assert epoch in (2, 3)
    # the interrupted run matched the uninterrupted one up to the kill (same seed, same CPU maths)
    straight = state_dict(os.path.join(trained["output_dir"], "checkpoints", f"checkpoint_epoch={epoch}.pt"))
    for key, value in state_dict(resume_from).items():
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0)

    resumed = run_bundle("training", "train.json", resume=True, **overrides)
    log = resumed.stdout + resumed.stderr
    assert "Epoch: 4/4" in log and "Epoch: 1/4" not in log and "Epoch: 2/4" not in log, "resume restarted"
    # prototypes found at the start of epoch 3 are in the epoch-3 checkpoint and must not be searched for again
    assert ("Prototype discovery" in log) == (epoch == 2)
    final = state_dict(os.path.join(paths["model_dir"], "model.pt"))
    expected = state_dict(os.path.join(trained["model_dir"], "model.pt"))
    assert final.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=0, atol=0, msg=key)


def test_inference_writes_embeddings_and_assignments_in_dataset_order(trained: dict, tmp_path) -> None:
    ckpt = os.path.join(trained["model_dir"], "model.pt")
    run_bundle(
        "inference", "inference.json", ckpt_path=ckpt, dataset_dir=trained["dataset_dir"], split="test",
        output_dir=str(tmp_path), progress=False,
    )
    embeddings = np.load(tmp_path / "embeddings.npy")
    dataset = MedMNISTDataset("pneumoniamnist", "test", trained["dataset_dir"])
    assert embeddings.shape == (len(dataset), 128) and embeddings.dtype == np.float32
    network = load_model(ContrastiveAutoEncoder(), ckpt, "cpu")
    with torch.no_grad():
        expected = network.encode(dataset.images).numpy()
    np.testing.assert_allclose(embeddings, expected, rtol=1e-4, atol=1e-5)

    rows = list(csv.DictReader(open(tmp_path / "assignments.csv")))
    k = network.num_prototypes
    assert len(rows) == len(dataset)
    assert list(rows[0]) == ["index", "id", "label", "cluster"] + [f"prob_{j}" for j in range(k)] + ["similarity"]
    assert [int(r["index"]) for r in rows] == list(range(len(dataset)))
    assert [int(r["label"]) for r in rows] == dataset.labels.tolist()
    probabilities = np.array([[float(r[f"prob_{j}"]) for j in range(k)] for r in rows])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    _, similarity = network.assign(torch.from_numpy(expected))
    assert [int(r["cluster"]) for r in rows] == similarity.argmax(1).tolist()
    np.testing.assert_allclose([float(r["similarity"]) for r in rows], similarity.max(1).values.numpy(), atol=1e-5)


def test_inference_without_a_model_fails_clearly(tmp_path) -> None:
    result = subprocess.run(
        bundle_command("inference", "inference.json", ckpt_path=str(tmp_path / "missing.pt"), progress=False),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "no trained model at" in result.stderr


def test_sampling_writes_images_of_a_stratum(trained: dict, tmp_path) -> None:
    run_bundle(
        "sampling", "sample.json", ckpt_path=os.path.join(trained["model_dir"], "model.pt"),
        dataset_dir=trained["dataset_dir"], stratum=1, num_samples=5, output_dir=str(tmp_path), progress=False,
    )
    from PIL import Image

    samples = sorted(tmp_path.glob("sample_*.png"))
    assert len(samples) == 5 and (tmp_path / "montage.png").is_file()
    pixels = np.stack([np.asarray(Image.open(p)) for p in samples])
    assert pixels.shape == (5, 28, 28) and pixels.std() > 0


def test_ckpt_export_gives_the_same_embeddings(trained: dict, tmp_path) -> None:
    ckpt = os.path.join(trained["model_dir"], "model.pt")
    k = np.load(os.path.join(trained["model_dir"], "prototypes.npy")).shape[0]
    exported = tmp_path / "model.ts"
    command = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
        "--ckpt_file", ckpt, "--config_file", os.path.join(CONFIGS, "train.json"),
        "--network_def#num_prototypes", str(k),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(exported))
    network = load_model(ContrastiveAutoEncoder(), ckpt, "cpu")
    images = MedMNISTDataset("pneumoniamnist", "val", trained["dataset_dir"]).images[:64]
    with torch.no_grad():
        h = network(images)
        torch.testing.assert_close(scripted(images), h)
        for got, expected in zip(scripted.assign(h), network.assign(h)):
            torch.testing.assert_close(got, expected)
    torch.testing.assert_close(scripted.conditional_decoder.assignment.prototypes, network.prototypes)
    # inference and sampling run on the export as on model.pt
    outputs = {}
    for model in (ckpt, str(exported)):
        out = tmp_path / ("from_" + os.path.basename(model))
        run_bundle("inference", "inference.json", ckpt_path=model, dataset_dir=trained["dataset_dir"],
                   output_dir=str(out / "inference"), progress=False)
        run_bundle("sampling", "sample.json", ckpt_path=model, dataset_dir=trained["dataset_dir"], num_samples=3,
                   output_dir=str(out / "samples"), progress=False)
        outputs[model] = {name: open(out / name, "rb").read() for name in (
            "inference/embeddings.npy", "inference/assignments.csv", "samples/sample_0000.png", "samples/sample_0002.png")}
    assert outputs[ckpt] == outputs[str(exported)]


def test_metadata_verifies_offline() -> None:
    command = [
        sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", os.path.join(CONFIGS, "metadata.json"),
        "--filepath", os.path.join("bundles", "cae", "docs", "meta_schema_20240725.json"),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_bundle_directory_passes_the_zoo_file_checks() -> None:
    """verify_bundle's directory and version checks, the zoo's 25 MB file limit and its JSON formatting hook."""
    bundle = os.path.join(REPO_ROOT, "bundles", "cae")
    for necessary in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert os.path.isfile(os.path.join(bundle, necessary)), necessary
    metadata = json.load(open(os.path.join(bundle, "configs", "metadata.json")))
    assert metadata["version"] in metadata["changelog"]
    for folder, _, files in os.walk(bundle):
        for name in files:
            path = os.path.join(folder, name)
            assert os.path.getsize(path) < 25 * 2**20, path
            if name.endswith(".json") and "runs" not in path:
                text = open(path).read()
                assert json.dumps(json.loads(text), indent=4, ensure_ascii=False) + "\n" == text, path
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=os.path.join(bundle, "models"), check=True)


@pytest.mark.skipif(os.environ.get("MONAI_CAE_REGENERATE_WEIGHTS") != "1",
                    reason="the full default schedule (8 min on 2 CPU cores); set MONAI_CAE_REGENERATE_WEIGHTS=1")
def test_the_shipped_weights_regenerate_bit_for_bit(tmp_path, shared_data) -> None:
    """The bundle README's regeneration command, from a copy of the bundle, gives the files of models/SHA256SUMS."""
    bundle = tmp_path / "cae"
    shutil.copytree(os.path.join(REPO_ROOT, "bundles", "cae"), bundle, ignore=shutil.ignore_patterns("runs", "eval"))
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
                    "--dataset_dir", os.path.join(shared_data, "medmnist"), "--model_dir", "regenerated",
                    "--output_dir", "runs/regenerate", "--progress", "False"],
                   cwd=bundle, check=True, capture_output=True, timeout=3600)
    subprocess.run(["sha256sum", "--check", "../models/SHA256SUMS"], cwd=bundle / "regenerated", check=True)


def test_every_target_is_a_full_dotted_monai_cae_or_library_path() -> None:
    for name in os.listdir(os.path.join(REPO_ROOT, CONFIGS)):
        if not name.endswith(".json"):
            continue
        text = open(os.path.join(REPO_ROOT, CONFIGS, name)).read()
        for target in [line.split('"_target_":')[1].strip().strip('",') for line in text.splitlines() if '"_target_"' in line]:
            assert target.count(".") >= 2 or target.startswith("ignite."), f"{name}: short _target_ {target}"


def monai_bundle(*arguments: str, cwd: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *arguments], cwd=cwd, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def fresh_venv_with_the_wheel(root) -> str:
    """A new venv holding only the built ``monai_cae`` wheel; its third-party dependencies are this interpreter's
    site-packages, put on its path as a plain folder (so their ``.pth`` files, among them the editable install of this
    checkout, are not run). Returns the venv's python."""
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), REPO_ROOT], check=True, capture_output=True, timeout=600)
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    python = str(env / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    assert in_venv(python, "import monai_cae", check=False).returncode != 0  # nothing of this checkout leaks in
    (wheel,) = glob.glob(str(wheels / "monai_cae-*.whl"))
    in_venv(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel)
    return python


def in_venv(python: str, *arguments: str, cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the venv's python (``-c CODE`` when the first argument is not an option) with a clean environment, in
    ``cwd`` or the venv's ``bin`` (never this checkout, whose ``monai_cae`` a ``-c`` would import)."""
    arguments = ("-c", *arguments) if not arguments[0].startswith("-") else arguments
    environment = {"PATH": f"{os.path.dirname(python)}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp"),
                   "OMP_NUM_THREADS": "1"}
    result = subprocess.run([python, *arguments], cwd=cwd or os.path.dirname(python), capture_output=True, text=True,
                            timeout=600,
                            env=environment)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_the_wheel_in_a_fresh_venv_runs_a_copy_of_the_bundle_from_inside_its_folder(
    tmp_path, shared_data, trained_model
) -> None:
    """The model-zoo user's path: install the wheel, write the bundle, stratify with the shipped model, train."""
    python = fresh_venv_with_the_wheel(tmp_path)
    where = in_venv(python, "import monai_cae, sys; print(monai_cae.__file__)").stdout
    assert where.startswith(str(tmp_path / "venv"))
    metadata = json.load(open(os.path.join(REPO_ROOT, CONFIGS, "metadata.json")))
    versions = in_venv(python, "-c", "import importlib.metadata as m, json, sys; "
                       "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
                       *metadata["required_packages_version"]).stdout
    assert json.loads(versions) == metadata["required_packages_version"]

    work = tmp_path / "empty"
    work.mkdir()
    bundle = work / "cae"
    assert in_venv(python, "-m", "monai_cae.apps.bundle", str(bundle)).stdout.strip() == str(bundle)
    source = os.path.join(REPO_ROOT, "bundles", "cae")
    names = ["LICENSE"] + [os.path.relpath(os.path.join(folder, name), source) for part in ("configs", "docs", "models")
                           for folder, _, files in os.walk(os.path.join(source, part)) for name in files]
    assert "models/model.pt" in names and filecmp.cmpfiles(source, str(bundle), names, shallow=False)[0] == names

    # inference right after install, with the shipped weights
    in_venv(python, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
            "--input_dir", os.path.join(shared_data, "dicom"), "--output_dir", "report", "--progress", "False",
            cwd=str(bundle))
    rows = list(csv.DictReader(open(bundle / "report" / "strata_per_image.csv")))
    skipped = list(csv.DictReader(open(bundle / "report" / "skipped.csv")))
    # the shared folder holds one radiograph twice (a MONOCHROME1 copy of the same SOP instance)
    assert len(rows) == 2 and [entry["reason"] for entry in skipped] == ["duplicate"]
    assert len(rows) + len(skipped) == len(os.listdir(os.path.join(shared_data, "dicom")))
    assert {int(row["stratum"]) for row in rows} <= set(range(len(np.load(bundle / "models" / "prototypes.npy"))))

    brief = [str(part) for key, value in BRIEF_TRAINING.items() for part in (f"--{key}", value)]
    in_venv(python, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
            "--dataset_dir", os.path.join(shared_data, "medmnist"), *brief, cwd=str(bundle))
    assert sorted(os.listdir(bundle / "runs" / "train" / "checkpoints")) == ["checkpoint_epoch=1.pt",
                                                                            "checkpoint_epoch=2.pt"]
    # the same schedule trained from the repository root with the editable install: the same bytes
    with open(bundle / "models" / "model.pt", "rb") as got, open(trained_model, "rb") as expected:
        assert got.read() == expected.read()
    assert sorted(os.listdir(work)) == ["cae"]


def test_a_wrong_dataset_dir_names_the_path_and_the_id(tmp_path) -> None:
    result = subprocess.run(
        bundle_command("training", "train.json", dataset_dir=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "o"),
                       model_dir=str(tmp_path / "m"), progress=False),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert str(tmp_path / "nowhere" / "pneumoniamnist.npz") in result.stderr and "--dataset_dir" in result.stderr


@pytest.mark.parametrize("config", ["train.json", "inference.json", "evaluate.json", "sample.json"])
def test_the_mnist_preset_merges_into_every_workflow(config: str, shared_data) -> None:
    parser = ConfigParser()
    parser.read_config([os.path.join(REPO_ROOT, CONFIGS, name) for name in (config, "mnist.json")])
    parser["dataset_dir"] = os.path.join(shared_data, "mnist")
    if config == "evaluate.json":
        dataset = parser.get_parsed_content("datasets")["train"]
    else:
        dataset = parser.get_parsed_content("train#dataset" if config == "train.json" else "dataset")
    assert len(dataset) == {"inference.json": 2000}.get(config, 7000)  # inference: the test split
    if config == "train.json":
        assert parser.get_parsed_content("train#augmentation").params.flip_prob == 0.0


# the model-zoo's ci/unit_tests pattern: per config, small overrides, then initialize, check_properties, run, finalize
ZOO_UNIT_TESTS = {
    "train.json": ("train", "training", {**BRIEF_TRAINING, "k_values": [2, 3], "model_dir": "{tmp}/models"}),
    "inference.json": ("infer", "inference", {"split": "val", "progress": False}),
    "evaluate.json": (None, "evaluating", {"figures": False, "progress": False}),
    "sample.json": (None, "sampling", {"num_samples": 2, "stratum": 1, "progress": False}),
}


@pytest.mark.parametrize("config", list(ZOO_UNIT_TESTS))
def test_zoo_style_unit_test_of_each_config(config: str, shared_data, tmp_path) -> None:
    workflow_type, run_id, overrides = ZOO_UNIT_TESTS[config]
    overrides = {key: value.format(tmp=tmp_path) if isinstance(value, str) else value for key, value in overrides.items()}
    workflow = ConfigWorkflow(
        config_file=os.path.join(REPO_ROOT, CONFIGS, config), workflow_type=workflow_type, run_id=run_id,
        meta_file=os.path.join(REPO_ROOT, CONFIGS, "metadata.json"),
        logging_file=os.path.join(REPO_ROOT, CONFIGS, "logging.conf"),
        bundle_root=os.path.join(REPO_ROOT, "bundles", "cae"), dataset_dir=os.path.join(shared_data, "medmnist"),
        output_dir=str(tmp_path / "out"), **overrides,
    )
    workflow.initialize()
    if workflow_type is not None:
        # raises for a missing required id (train#inferer, train#trainer, evaluator, inferer, ...), instantiating each
        workflow.check_properties()
    workflow.run()
    workflow.finalize()
    written = sorted(os.listdir(tmp_path / "out"))
    if config == "train.json":
        assert workflow.max_epochs == BRIEF_TRAINING["max_epochs"]
        assert {"checkpoints", "prototypes"} <= set(written) and os.path.isfile(tmp_path / "models" / "model.pt")
    elif config == "inference.json":  # the shipped model, run by MONAI's evaluator and inferer
        assert isinstance(workflow.evaluator, StrataEvaluator) and isinstance(workflow.inferer, SimpleInferer)
        shipped = np.load(os.path.join(REPO_ROOT, "bundles", "cae", "models", "prototypes.npy"))
        torch.testing.assert_close(workflow.evaluator.network.prototypes, torch.from_numpy(shipped))
        assert written == ["assignments.csv", "embeddings.npy"]
        assert len(np.load(tmp_path / "out" / "embeddings.npy")) == len(workflow.dataset)
    elif config == "evaluate.json":
        # the shipped model's metrics in metadata.json are what its evaluation gives
        results = json.load(open(tmp_path / "out" / "results.json"))
        names = {"stat": "cluster_mapping", "knn": "knn", "linear": "linear_probe"}
        measured = {f"{split}_{names[approach]}_accuracy": round(results[split][approach]["accuracy"], 3)
                    for split in ("val", "test") for approach in names}
        assert measured == json.load(open(os.path.join(REPO_ROOT, CONFIGS, "metadata.json")))["eval_metrics"]
    else:
        assert written == ["montage.png", "sample_0000.png", "sample_0001.png"]


def test_network_input_and_output_match_the_metadata() -> None:
    result = monai_bundle("verify_net_in_out", "network_def", "--meta_file", os.path.join(CONFIGS, "metadata.json"),
                          "--config_file", os.path.join(CONFIGS, "inference.json"), "--device", "cpu",
                          "--bundle_root", os.path.join("bundles", "cae"), cwd=REPO_ROOT)
    assert "data shape of network is verified with no error" in result.stdout + result.stderr
