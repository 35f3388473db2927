"""`python -m training.compare`: train and evaluate every compared method, then write RESULTS.md.

The comparison covers zero-shot, full fine-tuning, WiSE-FT (alpha chosen on id-val), LoRA, a linear
probe and R-Adapter; the ablation ladder from a plain adapter to full R-Adapter; few-shot R-Adapter
with K = 4 and 16; retrieval; segmentation; and the training cost of each run. Finished runs are reused, and
interrupted ones resume from their checkpoints, so the command can be rerun after a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import evaluate
from .data.manifest import load_manifest
from .finetune import TrainConfig, load_recipe, train
from .finetune.checkpoint import changed_settings, checkpoint_file
from .finetune.config import DEFAULT_TRAIN_SPLIT
from .finetune.data import few_shot_indices
from .finetune.outputs import SUMMARY_NAME
from .finetune.runtime import command_line, git_commit
from .finetune.sweep_report import headline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: a folder name, a recipe and the fields it changes."""

    name: str
    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)


METHOD_RUNS = [
    Run("r-adapter", "classification"),
    Run("full-ft", "classification", {"method": "full-ft"}),
    Run("lora", "classification", {"method": "lora"}),
    Run("linear-probe", "classification", {"method": "linear-probe"}),
]
# The ablation ladder switches R-Adapter's ingredients on one at a time, in this order. Each entry gives
# the settings that switch the ingredient off. A switched-on ingredient keeps the recipe's or shared value.
ABLATION_OFF = {
    "Adapter Dropping": {"drop_prob": 0.0},
    "EMA": {"ema_momentum": 0.0},
    "re-scaling": {"alpha": 1.0},
    "MPM-NCE": {"loss": "info-nce"},
    "label smoothing": {"label_smoothing": 0.0},
}
ABLATION_NAMES = ["ablation-base", "ablation-drop", "ablation-ema", "ablation-rescale", "ablation-mpm-nce"]


def ablation_overrides(enabled: int) -> dict[str, Any]:
    """Return the settings that switch off every ingredient after the first `enabled` ones."""
    overrides: dict[str, Any] = {}
    for off in list(ABLATION_OFF.values())[enabled:]:
        overrides.update(off)
    return overrides


# Row label and run name of each step. The last step, + label smoothing, is the `r-adapter` run itself.
ABLATION_STEPS = [
    ("base adapter" if enabled == 0 else f"+ {list(ABLATION_OFF)[enabled - 1]}", name)
    for enabled, name in enumerate(ABLATION_NAMES)
]
ABLATION_RUNS = [
    Run(name, "classification", ablation_overrides(enabled)) for enabled, name in enumerate(ABLATION_NAMES)
]
FEW_SHOT = (4, 16)
FEW_SHOT_RUNS = [Run(f"few-shot-{shots}", "few-shot", {"shots": shots}) for shots in FEW_SHOT] + [
    Run(f"few-shot-{shots}-full-ft", "few-shot", {"shots": shots, "method": "full-ft"}) for shots in FEW_SHOT
]
SEGMENTATION_RUNS = [
    Run("segmentation-r-adapter", "segmentation"),
    Run("segmentation-full-ft", "segmentation", {"method": "full-ft"}),
]
RETRIEVAL_RUNS = [
    Run("retrieval-r-adapter", "retrieval"),
    Run("retrieval-full-ft", "retrieval", {"method": "full-ft"}),
]
# Flags of `python -m training.compare` that apply to every training run when given.
SHARED_FIELDS = (
    "epochs",
    "max_steps",
    "batch_size",
    "warmup_steps",
    "lr",
    "ema_momentum",
    "seed",
    "precision",
    "limit",
    "num_workers",
)
# Full fine-tuning moves every weight of the image tower, so it gets its own, lower learning rate.
DEFAULT_FULL_FT_LR = 1e-4
# Settings a finished run may differ in and still be reused.
REUSABLE_CHANGES = {"log_every", "checkpoint_every", "num_workers", "output"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="benchmark folder written by `radapter data build`"
    )
    parser.add_argument("--arch", required=True, help="open_clip architecture name")
    parser.add_argument("--pretrained", help="base weights: an open_clip pretrained tag or a local file")
    parser.add_argument("--out", type=Path, required=True, help="folder for every run and evaluation")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("docs/RESULTS.md"),
        help="Markdown report to write (default: docs/RESULTS.md)",
    )
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N rows of each manifest")
    parser.add_argument("--skip-retrieval", action="store_true", help="leave out the retrieval runs")
    parser.add_argument("--skip-segmentation", action="store_true", help="leave out the segmentation runs")
    for name in SHARED_FIELDS:
        kind = {"precision": str, "lr": float, "ema_momentum": float}.get(name, int)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, help=f"override `{name}` in every run's recipe"
        )
    parser.add_argument(
        "--full-ft-lr",
        type=float,
        default=DEFAULT_FULL_FT_LR,
        help=f"peak learning rate of full fine-tuning runs, instead of --lr (default {DEFAULT_FULL_FT_LR})",
    )
    parser.add_argument(
        "--few-shot-lr",
        type=float,
        help="peak learning rate of the few-shot R-Adapter runs, instead of --lr (low-rank adapters "
        "of a few steps may need a higher one)",
    )
    parser.add_argument(
        "--extra-seeds",
        type=int,
        nargs="+",
        default=[],
        metavar="SEED",
        help="also train R-Adapter and full fine-tuning with these seeds; the goals use the mean",
    )
    parser.add_argument(
        "--retrieval-epochs", type=int, help="epochs of the retrieval runs, instead of --epochs"
    )
    parser.add_argument(
        "--segmentation-epochs", type=int, help="epochs of the segmentation runs, instead of --epochs"
    )


def run(args: argparse.Namespace) -> int:
    report = compare(args)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the comparison as `python -m training.compare`, with the error handling of `radapter`."""
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"python -m training.compare: error: {error}", file=sys.stderr)
        return 2


def compare(args: argparse.Namespace) -> Path:
    """Train and evaluate every run, then write the Markdown report; return its path."""
    check_arguments(args)
    start = time.perf_counter()
    shared = {name: getattr(args, name) for name in SHARED_FIELDS if getattr(args, name) is not None}
    main_seed = shared.get("seed", load_recipe("classification").get("seed", TrainConfig.seed))
    if main_seed in args.extra_seeds or len(set(args.extra_seeds)) < len(args.extra_seeds):
        raise ValueError(
            f"--extra-seeds {' '.join(map(str, args.extra_seeds))} repeats a seed (the main runs use "
            f"seed {main_seed}); pass each extra seed once, each different from --seed."
        )
    runs = METHOD_RUNS + ABLATION_RUNS + FEW_SHOT_RUNS
    runs += [] if args.skip_retrieval else RETRIEVAL_RUNS
    runs += [] if args.skip_segmentation else SEGMENTATION_RUNS
    runs += seed_runs(args.extra_seeds)
    # Every run's settings are checked before the first one trains.
    configs = {
        run.name: TrainConfig.from_dict(run_values(run, args, shared), source=f"comparison run {run.name!r}")
        for run in runs
    }
    summaries = {name: train_once(config) for name, config in configs.items()}

    evaluations = {
        "main": evaluate_runs(args, "main", ["r-adapter", "full-ft"], zero_shot=True, sweep=True),
        "others": evaluate_runs(
            args, "others", ["lora", "linear-probe", *[run.name for run in ABLATION_RUNS]]
        ),
        "few-shot": evaluate_runs(args, "few-shot", [run.name for run in FEW_SHOT_RUNS], sweep=True),
    }
    if args.extra_seeds:
        names = [run.name for run in seed_runs(args.extra_seeds)]
        evaluations["seeds"] = evaluate_runs(args, "seeds", names, sweep=True)
    for task, task_runs, skipped in (
        ("retrieval", RETRIEVAL_RUNS, args.skip_retrieval),
        ("segmentation", SEGMENTATION_RUNS, args.skip_segmentation),
    ):
        if not skipped:
            names = [run.name for run in task_runs]
            evaluations[task] = evaluate_runs(args, task, names, zero_shot=True, task=task)
    context = {"args": args, "shared": shared, "wall_time_s": time.perf_counter() - start}
    sweep_plot = evaluations["main"].get("alpha_sweep_files", {}).get("plot")
    if sweep_plot is not None:
        # The run folder stays out of git, so the report gets its own copy of the plot.
        context["plot"] = args.results.with_name(f"{args.results.stem}-alpha-sweep.png")
        shutil.copyfile(sweep_plot, context["plot"])
    text = render_report(summaries, evaluations, context)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text, encoding="utf-8")
    return args.results


def check_arguments(args: argparse.Namespace) -> None:
    """Reject invalid flags of the comparison itself before anything trains."""
    if not args.data.is_dir():
        raise FileNotFoundError(
            f"--data {args.data} is not a folder; build the benchmark with `radapter data build`."
        )
    for flag, value in (("--full-ft-lr", args.full_ft_lr), ("--few-shot-lr", args.few_shot_lr)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} {value} is invalid; pass a positive learning rate such as 1e-4.")
    for flag, value in (
        ("--retrieval-epochs", args.retrieval_epochs),
        ("--segmentation-epochs", args.segmentation_epochs),
        ("--eval-limit", args.eval_limit),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value} is invalid; pass a positive integer.")
    negative = [seed for seed in args.extra_seeds if seed < 0]
    if negative:
        raise ValueError(f"--extra-seeds {negative[0]} is invalid; seeds are non-negative integers.")
    if not (args.data / "id-val.jsonl").is_file():
        logger.warning("%s has no id-val.jsonl, so the report leaves out the WiSE-FT rows", args.data)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; pass a folder for the runs.")
    if args.results.is_dir() or not args.results.name:
        raise ValueError(
            f"--results {args.results} is a folder; pass a Markdown file such as docs/RESULTS.md."
        )
    try:
        args.results.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--results {args.results}: cannot create its folder ({error.strerror}); pass a writable path."
        ) from error
    if not os.access(args.results.parent, os.W_OK):
        raise ValueError(f"--results {args.results}: its folder is not writable; pass a writable path.")


def train_once(config: TrainConfig) -> dict[str, Any]:
    """Return the training summary of `config`, training it unless its output folder contains a finished run.

    An unfinished run with a checkpoint resumes, so in both cases the saved settings must match.
    """
    output = Path(config.output)
    finished = (output / SUMMARY_NAME).is_file()
    if finished or checkpoint_file(output).is_file():
        saved = read_json(output / "config.json")
        changed = changed_settings(saved, config, REUSABLE_CHANGES | same_paths(saved, config))
        if changed:
            state = "a finished" if finished else "an unfinished"
            raise ValueError(
                f"{output} contains {state} run with different settings ({', '.join(changed[:5])}); "
                "restore those settings, or pass a new --out (deleting the folder trains the run again)."
            )
    if finished:
        logger.info("reusing the finished run %s", output)
        return read_json(output / SUMMARY_NAME)
    logger.info("training %s", output)
    return train(config)


def same_paths(saved: dict[str, Any], config: TrainConfig) -> set[str]:
    """Return the path settings that are spelled differently in `saved` but name the same file."""
    same = set()
    for key in ("data", "pretrained", "train_manifest"):
        before, after = saved.get(key), getattr(config, key)
        if isinstance(before, str) and isinstance(after, str) and Path(before).exists():
            if Path(after).exists() and Path(before).resolve() == Path(after).resolve():
                same.add(key)
    return same


def run_values(run: Run, args: argparse.Namespace, shared: dict[str, Any]) -> dict[str, Any]:
    """Return the settings of `run`: its recipe, then the shared flags, then the run's own changes."""
    values = load_recipe(run.recipe)
    values.update(shared)
    task_epochs = {"retrieval": args.retrieval_epochs, "segmentation": args.segmentation_epochs}
    if task_epochs.get(values["task"]) is not None:
        values["epochs"] = task_epochs[values["task"]]
    values.update(run.overrides)
    if values.get("method") == "full-ft":
        values["lr"] = args.full_ft_lr
    elif values.get("shots") is not None and args.few_shot_lr is not None:
        values["lr"] = args.few_shot_lr
    values.update(
        arch=args.arch, pretrained=args.pretrained, data=str(args.data), output=str(args.out / run.name)
    )
    if values.get("shots") is not None:
        fit_few_shot_batch(values, args.data)
    return values


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file a finished run or evaluation wrote, naming the file when it is missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ValueError(f"{path} is missing; delete {path.parent} and rerun to rebuild it.") from error
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); delete {path.parent} and rerun to rebuild it."
        ) from error


def fit_few_shot_batch(values: dict[str, Any], data: Path) -> None:
    """Shrink the batch to the few-shot training set when it is smaller (K x classes can be < 512)."""
    labels = [
        record.label for record in load_manifest(data / f"{DEFAULT_TRAIN_SPLIT['classification']}.jsonl")
    ]
    num_samples = len(few_shot_indices(labels, values["shots"], values.get("seed", 0)))
    if values.get("limit") is not None:
        num_samples = min(num_samples, values["limit"])
    if values["batch_size"] > num_samples:
        logger.info(
            "few-shot K=%d has %d samples, so its batch size is %d", values["shots"], num_samples, num_samples
        )
        values["batch_size"] = num_samples


def evaluate_runs(
    args: argparse.Namespace,
    name: str,
    runs: list[str],
    zero_shot: bool = False,
    sweep: bool = False,
    task: str = "classification",
) -> dict[str, Any]:
    """Evaluate `runs` into `<out>/eval/<name>`, or reuse that evaluation when nothing it read changed."""
    output = args.out / "eval" / name
    argv = ["--data", str(args.data), "--task", task, "--output", str(output)]
    for run_name in runs:
        argv += ["--run", str(args.out / run_name)]
    argv += ["--zero-shot"] * zero_shot + ["--alpha-sweep"] * sweep
    if args.eval_limit is not None:
        argv += ["--limit", str(args.eval_limit)]
    # A retrained run writes a new summary (its wall time differs), so its hash changes too.
    inputs = {
        "argv": argv,
        "summaries": {
            run_name: hashlib.sha256((args.out / run_name / SUMMARY_NAME).read_bytes()).hexdigest()
            for run_name in runs
        },
    }
    inputs_path, results_path = output / "inputs.json", output / "results.json"
    if inputs_path.is_file() and results_path.is_file() and read_json(inputs_path) == inputs:
        logger.info("reusing the evaluation %s", output)
        return read_json(results_path)
    logger.info("evaluating %s", output)
    inputs_path.unlink(missing_ok=True)  # an interrupted evaluation must not look finished
    parser = argparse.ArgumentParser(prog="radapter evaluate")
    evaluate.add_arguments(parser)
    record = evaluate.evaluate_command(parser.parse_args(argv))
    inputs_path.write_text(json.dumps(inputs, indent=2) + "\n", encoding="utf-8")
    return record


# -- report ---------------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def sweep_row(evaluation: dict[str, Any], run: str) -> tuple[float, dict[str, Any]] | None:
    """Return (alpha, metrics) of `run`'s alpha sweep at the alpha chosen on id-val, if it has one."""
    best = evaluation["results"][run].get("best_alpha_on_id_val")
    if best is None:
        return None
    return best, next(row for row in evaluation["alpha_sweep"][run] if row["alpha"] == best)


def classification_rows(evaluations: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (label, alpha, metrics) for the method table, taking each sweep at its id-val alpha."""
    main, others = evaluations["main"], evaluations["others"]
    rows = [("zero-shot", "-", main["results"]["zero-shot"])]
    rows.append(("full fine-tuning", "1.0", main["results"]["full-ft"]))
    wise = sweep_row(main, "full-ft")
    if wise is not None:
        rows.append(("WiSE-FT (alpha on id-val)", f"{wise[0]:.1f}", wise[1]))
    rows.append(("LoRA", "-", others["results"]["lora"]))
    rows.append(("linear probe", "-", others["results"]["linear-probe"]))
    rows.append(("R-Adapter", f"{main['results']['r-adapter']['alpha']:.1f}", main["results"]["r-adapter"]))
    rescaled = sweep_row(main, "r-adapter")
    if rescaled is not None:
        rows.append(("R-Adapter (alpha on id-val)", f"{rescaled[0]:.1f}", rescaled[1]))
    return rows


def classification_table(evaluations: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[str]:
    rows = classification_rows(evaluations)
    trainable = {
        "full fine-tuning": "full-ft",
        "WiSE-FT (alpha on id-val)": "full-ft",
        "LoRA": "lora",
        "linear probe": "linear-probe",
        "R-Adapter": "r-adapter",
        "R-Adapter (alpha on id-val)": "r-adapter",
    }
    shifts = [key for key in rows[0][2] if key.startswith(("ood-", "extra-")) and key != "ood-mean"]
    lines = [
        "| method | trainable parameters | alpha | ID | OOD mean | " + " | ".join(shifts) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(shifts),
    ]
    for label, alpha, metrics in rows:
        summary = summaries.get(trainable.get(label, ""))
        count = f"{summary['trainable_parameters']:,}" if summary else "0"
        cells = [percent(metrics.get("id-test")), percent(metrics.get("ood-mean"))]
        cells += [percent(metrics.get(shift)) for shift in shifts]
        lines.append(f"| {label} | {count} | {alpha} | " + " | ".join(cells) + " |")
    return lines


def seed_runs(seeds: list[int]) -> list[Run]:
    """Return the extra R-Adapter and full fine-tuning classification runs, one pair per seed."""
    runs = []
    for seed in seeds:
        runs.append(Run(f"r-adapter-seed{seed}", "classification", {"seed": seed}))
        runs.append(Run(f"full-ft-seed{seed}", "classification", {"method": "full-ft", "seed": seed}))
    return runs


def per_seed(evaluations: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per seed: the seed and the R-Adapter, full fine-tuning and WiSE-FT metrics."""
    pairs = [(evaluations["main"], "r-adapter", "full-ft")]
    extra = evaluations.get("seeds")
    if extra is not None:
        adapters = sorted(
            (name for name in extra["results"] if name.startswith("r-adapter-seed")), key=extra["seeds"].get
        )
        pairs += [(extra, name, name.replace("r-adapter", "full-ft", 1)) for name in adapters]
    rows = []
    for evaluation, adapter, full_ft in pairs:
        wise = sweep_row(evaluation, full_ft)
        rows.append(
            {
                "seed": evaluation["seeds"][adapter],
                "r-adapter": evaluation["results"][adapter],
                "full-ft": evaluation["results"][full_ft],
                "wise-ft": None if wise is None else wise[1],
            }
        )
    return rows


def mean_and_spread(values: list[float]) -> tuple[float, str]:
    """Return the mean and its text: `mean` for one value, `mean ± sample standard deviation` for more."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, percent(mean)
    return mean, f"{percent(mean)} ± {percent(statistics.stdev(values))}"


def goals_table(evaluations: dict[str, Any]) -> list[str]:
    """Check the three goals on the means over seeds of R-Adapter at the recipe's alpha."""
    rows = per_seed(evaluations)

    def mean_of(method: str, metric: str) -> tuple[float, str] | None:
        values = [row[method][metric] for row in rows if row[method] is not None]
        return mean_and_spread(values) if len(values) == len(rows) else None

    adapter_ood, adapter_id = mean_of("r-adapter", "ood-mean"), mean_of("r-adapter", "id-test")
    checks = [
        ("OOD mean above full fine-tuning's", adapter_ood, mean_of("full-ft", "ood-mean"), 0.0, False),
        ("OOD mean at least WiSE-FT's", adapter_ood, mean_of("wise-ft", "ood-mean"), 0.0, True),
        ("ID within 2 points of full fine-tuning's", adapter_id, mean_of("full-ft", "id-test"), -0.02, True),
    ]
    lines = [
        f"Means over {len(rows)} seed(s) ({', '.join(str(row['seed']) for row in rows)})"
        + (", ± the sample standard deviation." if len(rows) > 1 else "."),
        "",
        "| goal | R-Adapter | reference | reached |",
        "|---|---:|---:|---|",
    ]
    verdicts: dict[bool, list[str]] = {True: [], False: []}
    for goal, value, reference, slack, inclusive in checks:
        if value is None or reference is None:
            continue
        margin = value[0] - (reference[0] + slack)
        reached = margin >= 0 if inclusive else margin > 0
        verdicts[reached].append(goal)
        lines.append(f"| {goal} | {value[1]} | {reference[1]} | {'yes' if reached else 'no'} |")
    lines.append("")
    for reached, label in ((True, "Reached here"), (False, "Not reached here")):
        if verdicts[reached]:
            lines.append(f"{label}: R-Adapter's " + "; ".join(verdicts[reached]) + ".")
    if len(rows) > 1:
        lines += [
            "",
            "Per seed (WiSE-FT at each seed's id-val alpha):",
            "",
            "| seed | R-Adapter ID | R-Adapter OOD | full FT ID | full FT OOD | WiSE-FT ID | WiSE-FT OOD |",
        ]
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            wise = row["wise-ft"] or {}
            cells = [
                percent(row["r-adapter"].get("id-test")),
                percent(row["r-adapter"].get("ood-mean")),
                percent(row["full-ft"].get("id-test")),
                percent(row["full-ft"].get("ood-mean")),
                percent(wise.get("id-test")),
                percent(wise.get("ood-mean")),
            ]
            lines.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
    return lines


def ablation_table(evaluations: dict[str, Any]) -> list[str]:
    lines = ["| step | ID | OOD mean |", "|---|---:|---:|"]
    results = evaluations["others"]["results"]
    for label, name in ABLATION_STEPS:
        lines.append(
            f"| {label} | {percent(results[name].get('id-test'))} "
            f"| {percent(results[name].get('ood-mean'))} |"
        )
    full = evaluations["main"]["results"]["r-adapter"]
    lines.append(
        f"| + label smoothing (R-Adapter) | {percent(full.get('id-test'))} "
        f"| {percent(full.get('ood-mean'))} |"
    )
    return lines


def few_shot_table(evaluations: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[str]:
    zero_shot = evaluations["main"]["results"]["zero-shot"]
    few_shot = evaluations["few-shot"]
    lines = [
        "| K (images per class) | method | trainable parameters | steps | alpha | ID | OOD mean |",
        "|---:|---|---:|---:|---:|---:|---:|",
        f"| 0 | zero-shot | 0 | 0 | - | {percent(zero_shot.get('id-test'))} "
        f"| {percent(zero_shot.get('ood-mean'))} |",
    ]
    for shots in FEW_SHOT:
        adapter, full_ft = f"few-shot-{shots}", f"few-shot-{shots}-full-ft"
        rows = [
            (
                "R-Adapter",
                adapter,
                f"{few_shot['results'][adapter]['alpha']:.1f}",
                few_shot["results"][adapter],
            ),
            ("full fine-tuning", full_ft, "1.0", few_shot["results"][full_ft]),
        ]
        wise = sweep_row(few_shot, full_ft)
        if wise is not None:
            rows.append(("WiSE-FT (alpha on id-val)", full_ft, f"{wise[0]:.1f}", wise[1]))
        for label, run, alpha, metrics in rows:
            summary = summaries[run]
            lines.append(
                f"| {shots} | {label} | {summary['trainable_parameters']:,} | {summary['steps']} | {alpha} "
                f"| {percent(metrics.get('id-test'))} | {percent(metrics.get('ood-mean'))} |"
            )
    return lines


def retrieval_table(evaluations: dict[str, Any]) -> list[str]:
    if "retrieval" not in evaluations:
        return ["Not run: `python -m training.compare` was called with `--skip-retrieval`."]
    keys = [f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
    short = [key.replace("image_to_text", "I2T").replace("text_to_image", "T2I") for key in keys]
    lines = [
        "| method | "
        + " | ".join(f"ID {key}" for key in short)
        + " | "
        + " | ".join(f"OOD {key}" for key in short)
        + " |",
        "|---|" + "---:|" * (2 * len(keys)),
    ]
    labels = {
        "zero-shot": "zero-shot",
        "retrieval-full-ft": "full fine-tuning",
        "retrieval-r-adapter": "R-Adapter",
    }
    for name, label in labels.items():
        metrics = evaluations["retrieval"]["results"][name]
        cells = [percent(metrics.get(f"id/{key}")) for key in keys] + [
            percent(metrics.get(f"ood-mean/{key}")) for key in keys
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def segmentation_table(evaluations: dict[str, Any]) -> list[str]:
    if "segmentation" not in evaluations:
        return ["Not run: `python -m training.compare` was called with `--skip-segmentation`."]
    lines = ["| method | ID mIoU | OOD mIoU |", "|---|---:|---:|"]
    labels = {
        "zero-shot": "zero-shot",
        "segmentation-full-ft": "full fine-tuning",
        "segmentation-r-adapter": "R-Adapter",
    }
    for name, label in labels.items():
        metrics = evaluations["segmentation"]["results"][name]
        lines.append(
            f"| {label} | {percent(metrics.get('id/mIoU'))} | {percent(metrics.get('ood-mean/mIoU'))} |"
        )
    return lines


def cost_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| run | trainable parameters | share of model | steps | mean step time (s) "
        "| peak memory (MiB) | device |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, summary in summaries.items():
        share = summary["trainable_parameters"] / summary["total_parameters"]
        step_time = "-" if summary["mean_step_time_s"] is None else f"{summary['mean_step_time_s']:.3f}"
        lines.append(
            f"| {name} | {summary['trainable_parameters']:,} | {100 * share:.2f}% | {summary['steps']} | "
            f"{step_time} | {summary['peak_memory_mb']:.0f} | {summary['device']} |"
        )
    adapter, full_ft = summaries.get("r-adapter"), summaries.get("full-ft")
    if adapter and full_ft:
        lines += [
            "",
            "R-Adapter relative to full fine-tuning (classification runs): "
            + relative_cost(adapter, full_ft),
        ]
    return lines


def relative_cost(adapter: dict[str, Any], full_ft: dict[str, Any]) -> str:
    """Describe the adapter run's trainable parameters, step time and peak memory as ratios to full-ft."""
    parts = [
        f"{adapter['trainable_parameters'] / full_ft['trainable_parameters']:.2f}x the trainable parameters"
    ]
    if adapter["mean_step_time_s"] and full_ft["mean_step_time_s"]:
        parts.append(f"{adapter['mean_step_time_s'] / full_ft['mean_step_time_s']:.2f}x the step time")
    parts.append(f"{adapter['peak_memory_mb'] / full_ft['peak_memory_mb']:.2f}x the peak memory")
    return ", ".join(parts) + "."


def sweep_section(sweep_files: dict[str, str], plot: Path | None) -> list[str]:
    """Return the alpha sweep table of R-Adapter re-scaling and WiSE-FT, and a link to its plot."""
    if "table" not in sweep_files:
        return ["No alpha sweep was run."]
    table = Path(sweep_files["table"]).read_text(encoding="utf-8").splitlines()
    lines = [
        "Alpha sweep, top-1 (%): R-Adapter re-scaling (alpha scales the adapters) and WiSE-FT (alpha",
        "interpolates from the zero-shot to the fine-tuned weights).",
        "",
        *[line for line in table if line.startswith("|")],
    ]
    if plot is not None:
        lines += ["", f"![ID against OOD top-1 along both alpha sweeps]({plot.name})"]
    return lines


def all_seeds(evaluations: dict[str, Any]) -> dict[str, int]:
    """Return the seed of every evaluated run."""
    return {name: seed for evaluation in evaluations.values() for name, seed in evaluation["seeds"].items()}


def manifest_list(evaluation: dict[str, Any]) -> str:
    """Return the manifests an evaluation read, with their sizes and a warning when id-val is missing."""
    manifests = evaluation["manifests"]
    text = ", ".join(f"{name} ({count})" for name, count in sorted(manifests.items()))
    if "id-val" not in manifests:
        text += "; id-val is missing, so no alpha is chosen on it and the WiSE-FT rows are left out"
    return text


def compute_time(summaries: dict[str, dict[str, Any]], evaluations: dict[str, Any]) -> float:
    """Return the seconds spent in every training run and evaluation, whichever invocation ran them."""
    training = sum(summary["wall_time_s"] for summary in summaries.values())
    return training + sum(evaluation["wall_time_s"] for evaluation in evaluations.values())


def render_report(
    summaries: dict[str, dict[str, Any]], evaluations: dict[str, Any], context: dict[str, Any]
) -> str:
    """Return RESULTS.md: provenance, then one table per comparison."""
    args = context["args"]
    sweep_files = evaluations["main"].get("alpha_sweep_files", {})
    identity, ood = headline(evaluations["main"]["results"]["zero-shot"], "classification")
    sections = [
        "# Results: R-Adapter against zero-shot, full fine-tuning, WiSE-FT, LoRA and a linear probe",
        "",
        "Written by `python -m training.compare`; rerun it to refresh every number below.",
        "Do not edit it by hand.",
        "",
        f"- command: `{command_line()}`",
        f"- git commit: `{git_commit()}`",
        f"- base model: `{args.arch}` with weights `{args.pretrained or 'random init'}`",
        f"- data: `{args.data}`; manifests per evaluation are listed in `{args.out}/eval/*/results.json`",
        f"- settings changed from the recipes: `{json.dumps(context['shared'], sort_keys=True) or '{}'}`",
        f"- seeds: `{json.dumps(all_seeds(evaluations), sort_keys=True)}`",
        f"- test sets: {manifest_list(evaluations['main'])}",
        f"- time spent: {compute_time(summaries, evaluations):.0f} s training and evaluating every run "
        f"(this invocation: {context['wall_time_s']:.0f} s, reusing finished runs)",
        "",
        "ID is top-1 (%) on id-test; OOD mean is the mean top-1 over the ood-* sets.",
        f"Zero-shot reaches ID {percent(identity)} and OOD {percent(ood)} on this data.",
        "",
        "## Goals",
        "",
        "Goals of the comparison, checked on the R-Adapter row at the recipe's alpha; they are goals,",
        "not guarantees, and a `no` is a result.",
        "",
        *goals_table(evaluations),
        "",
        "## Classification",
        "",
        "Trainable parameters count what the optimizer updates; zero-shot trains nothing. The second",
        "R-Adapter row takes the re-scaling alpha chosen on id-val, as WiSE-FT's alpha is.",
        "",
        *classification_table(evaluations, summaries),
        "",
        "## Alpha sweep",
        "",
        *sweep_section(sweep_files, context.get("plot")),
        "",
        "## Ablation ladder",
        "",
        "Each row adds one ingredient to the row above; the base adapter trains full-rank adapters",
        "with InfoNCE, without dropping, EMA, re-scaling (alpha 1) or label smoothing.",
        "",
        *ablation_table(evaluations),
        "",
        "## Few-shot classification",
        "",
        "K training images per class (seeded), the few-shot recipe: low-rank R-Adapter; full fine-tuning",
        "and WiSE-FT train the image tower on the same images.",
        "",
        *few_shot_table(evaluations, summaries),
        "",
        "## Retrieval",
        "",
        "Recall@k (%) in both directions: ID on retrieval-test-noto, OOD the mean over the other styles.",
        "",
        *retrieval_table(evaluations),
        "",
        "## Segmentation",
        "",
        "Mean IoU (%) over background and the classes present: ID on segmentation-test-id, OOD the mean",
        "over the other segmentation-test-* sets.",
        "",
        *segmentation_table(evaluations),
        "",
        "## Training cost",
        "",
        "Step time is the mean over steps after the first. Peak memory is the CUDA allocator's peak per",
        "run on a GPU. On a CPU it is the process's resident-set high-water mark during the run, which",
        "includes memory the process still held from earlier runs.",
        "",
        *cost_table(summaries),
        "",
    ]
    return "\n".join(sections)


if __name__ == "__main__":
    sys.exit(main())
