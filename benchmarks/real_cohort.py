"""The one command on a real adult chest X-ray archive, timed, and what its strata capture.

    python benchmarks/real_cohort.py                      # train at 128 px with the defaults, then analyse
    python benchmarks/real_cohort.py --run-dir OUT        # analyse (or reuse) the run in OUT

Runs ``monai-cae-stratify ../shared/data/real_cxr/archive OUT`` (110 DICOM DX radiographs of 64 patients, 128 px
preset), timing the whole command. Then, and only for this evaluation, reads ``labels.csv`` (view, finding, sex, age)
and scores the report's strata against each: NMI beside the NMI of 200 shufflings of the strata
(:func:`monai_cae.evaluation.permutation_nmi`). Writes ``docs/figures/real_cxr_strata.png`` (the make-up of each
stratum by view and by finding) and ``docs/figures/real_cxr_report.png`` (the report page without thumbnails,
rendered by headless Chromium when it is installed), and the figures as JSON to ``benchmarks/results/real_cohort.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from monai_cae.evaluation import permutation_nmi  # noqa: E402

from common import environment, save_json  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(REPO_ROOT, "docs", "figures")


def age_band(age: str) -> str:
    if not age.strip().isdigit():
        return "unknown"
    value = int(age)
    return "<40" if value < 40 else "40-59" if value < 60 else "60-79" if value < 80 else "80+"


def composition_figure(strata: np.ndarray, fields: dict[str, list[str]], path: str) -> None:
    """Stacked bars: the share of each value of each field within every stratum, and in the whole archive."""
    order = sorted(set(strata.tolist()))
    fig, axes = plt.subplots(1, len(fields), figsize=(5.5 * len(fields), 4), constrained_layout=True)
    for ax, (name, values) in zip(np.atleast_1d(axes), fields.items()):
        categories = [v for v, _ in Counter(values).most_common()]
        columns = [np.array(values)[strata == s] for s in order] + [np.array(values)]
        labels = [f"stratum {s}\n({int((strata == s).sum())})" for s in order] + [f"archive\n({len(values)})"]
        bottom = np.zeros(len(columns))
        for category in categories:
            share = np.array([(c == category).mean() for c in columns])
            ax.bar(labels, share, bottom=bottom, label=category)
            bottom += share
        ax.set_title(f"{name} per stratum")
        ax.set_ylabel("share of images")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def screenshot(html: str, path: str) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--screenshot={path}", "--window-size=1300,2400", f"file://{os.path.abspath(html)}"],
            check=True, capture_output=True, timeout=120,
        )
    return os.path.isfile(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    parser.add_argument("--run-dir", default=None, help="run folder (default: a temporary one); reused when complete")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "real_cohort.json"))
    args = parser.parse_args()
    cohort = os.path.join(args.shared, "real_cxr")
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or os.path.join(scratch, "run")
        result: dict = {"environment": environment(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        if not os.path.isfile(os.path.join(run_dir, "report", "strata_per_image.csv")):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "monai_cae.apps.stratify", os.path.join(cohort, "archive"), run_dir,
                 "--img-size", str(args.img_size), "--quiet"], check=True, capture_output=True, text=True,
                cwd=REPO_ROOT,
            )
            result["command_seconds"] = time.perf_counter() - start
            result["command_summary"] = done.stdout.strip().splitlines()[-1]
            print(f"monai-cae-stratify, {args.img_size} px: {result['command_seconds']:.1f} s wall\n  "
                  f"{result['command_summary']}")
        with open(os.path.join(run_dir, "report", "strata_per_image.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(cohort, "labels.csv"), newline="") as f:
            truth = {r["path"]: r for r in csv.DictReader(f)}
        strata = np.array([int(r["stratum"]) for r in rows])
        fields = {
            "view": [truth[r["image_id"]]["view"] for r in rows],
            "finding": [truth[r["image_id"]]["finding"] for r in rows],
            "sex": [truth[r["image_id"]]["sex"] for r in rows],
            "age band": [age_band(truth[r["image_id"]]["age"]) for r in rows],
        }
        result["images"], result["strata_sizes"] = len(rows), dict(Counter(strata.tolist()))
        result["against"] = {name: permutation_nmi(values, strata, args.permutations) for name, values in fields.items()}
        for name, score in result["against"].items():
            print(f"strata against {name}: NMI {score['nmi']:.3f} (shuffled: mean {score['chance_mean']:.3f}, "
                  f"95th percentile {score['chance_p95']:.3f}; p = {score['p_value']:.3f})")
        os.makedirs(FIGURES, exist_ok=True)
        composition_figure(strata, {k: fields[k] for k in ("view", "finding")},
                           os.path.join(FIGURES, "real_cxr_strata.png"))
        # the committed page shows no radiograph (some images' licences allow no derivatives): the report is
        # written again without thumbnails for it
        page = os.path.join(scratch, "page")
        subprocess.run([sys.executable, "-m", "monai_cae.reports.cli", os.path.join(cohort, "archive"), page, "--model",
                        os.path.join(run_dir, "model", "model.pt"), "--no-thumbnails", "--quiet"], check=True,
                       capture_output=True, cwd=REPO_ROOT)
        result["report_screenshot"] = screenshot(os.path.join(page, "report.html"),
                                                 os.path.join(FIGURES, "real_cxr_report.png"))
        save_json(result, args.output)


if __name__ == "__main__":
    main()
