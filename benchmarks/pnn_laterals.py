"""Are `der-smnist-pnn`'s two runs distinct? PNN's laterals, read from the stored weights.

    python benchmarks/pnn_laterals.py --data-dir DATA --store STORE [STORE ...] [--seeds 0 1 2]
        # -> benchmarks/results/pnn_laterals.json

Reads, for each seed, the two runs of ``forgetless reproduce der-smnist-pnn`` from the run
store (run them first; nothing is trained here) and reports, per task: the test accuracy of
PNN, of ``specialists --start initial``, and of PNN with every lateral adapter cut off
(``U`` set to zero: each column alone), all from the weights stored after the last task. If the
laterals were inactive, cutting them would change nothing; if both runs fell back to one path,
their per-task accuracies and weights would be equal. Also: which columns of PNN hold the
same weights as the specialist of their task (column 0 should: same seed, same start, same
data; the later columns are fresh draws with adapters, the specialists copies of the initial
weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from forgetless.models import ProgressiveNet, build_model
from forgetless.models.specialists import SpecialistNet
from forgetless.runs.checkpoint import load_weights
from forgetless.scenarios import make_stream
from grid import publish

OUT = Path(__file__).parent / "results" / "pnn_laterals.json"


def _run_folder(stores: list[Path], strategy: str, seed: int) -> Path:
    """The stored run of ``strategy`` at ``seed`` (the folder's name: scenario_strategy_sSEED_hash)."""
    found = sorted(
        {
            p.parent.name: p
            for s in stores
            for p in s.glob(f"split-mnist_{strategy}_s{seed}_*/result.json")
        }.values()
    )
    if len(found) != 1:
        raise SystemExit(
            f"expected one {strategy} run of seed {seed} in {stores}, found {len(found)}"
        )
    return found[0].parent


def _predictions(net: torch.nn.Module, stream) -> list[torch.Tensor]:
    """Per task, the predicted class of each test image, the task given (argmax over the task's
    own units, as the engine's task-IL evaluation)."""
    net.eval()
    out = []
    with torch.no_grad():
        for j, task in enumerate(stream.tasks):
            units = torch.tensor(task.units)
            x = task.test.inputs(slice(0, len(task.test)))
            out.append(units[net(x, j).index_select(-1, units).argmax(dim=-1)])
    return out


def _accuracy(predictions: list[torch.Tensor], stream) -> list[float]:
    """Per task, test accuracy in percent."""
    return [
        100.0 * (p == task.test.y).sum().item() / len(p)
        for p, task in zip(predictions, stream.tasks, strict=True)
    ]


def seed_report(stores: list[Path], data_dir: str, seed: int) -> dict:
    pnn_dir, spec_dir = _run_folder(stores, "pnn", seed), _run_folder(stores, "specialists", seed)
    pnn_result = json.loads((pnn_dir / "result.json").read_text())
    spec_result = json.loads((spec_dir / "result.json").read_text())
    config = pnn_result["config"]
    stream = make_stream(
        "split-mnist",
        seed=seed,
        protocol="task",
        data_dir=data_dir,
        class_order=config["class_order"],
    )
    tasks = len(stream.tasks)

    def mlp():
        return build_model("mlp", stream.input_shape, stream.num_outputs, config["hidden"])

    pnn = ProgressiveNet(mlp())
    for k in range(1, tasks):
        pnn.add_column(k)  # structure only: the stored weights load next
    pnn.load_state_dict(load_weights(pnn_dir / "checkpoints" / f"model-task-{tasks}.safetensors"))
    spec = SpecialistNet(mlp())
    for _ in range(1, tasks):
        spec.add()
    spec.load_state_dict(load_weights(spec_dir / "checkpoints" / f"model-task-{tasks}.safetensors"))

    pnn_predictions = _predictions(pnn, stream)
    spec_predictions = _predictions(spec, stream)
    with_laterals = _accuracy(pnn_predictions, stream)
    alphas = [[round(a.alpha.item(), 4) for a in adapters] for adapters in pnn.adapters[1:]]
    lateral_norms = [
        [round(a.lateral.weight.norm().item(), 3) for a in adapters]
        for adapters in pnn.adapters[1:]
    ]
    with torch.no_grad():
        for adapters in pnn.adapters:
            for adapter in adapters:
                adapter.lateral.weight.zero_()
    cut_predictions = _predictions(pnn, stream)
    without_laterals = _accuracy(cut_predictions, stream)
    specialists = _accuracy(spec_predictions, stream)
    same_weights = []
    for k in range(tasks):
        column = [p for p in pnn.columns[k].parameters()]
        expert = [p for p in spec.experts[k].parameters()]
        same_weights.append(all(torch.equal(a, b) for a, b in zip(column, expert, strict=True)))
    stored = [100.0 * a for a in pnn_result["accuracy_matrix"][-1]]
    return {
        "seed": seed,
        "run_ids": {"pnn": pnn_dir.name, "specialists_initial": spec_dir.name},
        "config_differs_in": sorted(k for k in config if config[k] != spec_result["config"][k]),
        "acc": {
            "pnn": 100.0 * pnn_result["metrics"]["acc"],
            "specialists_initial": 100.0 * spec_result["metrics"]["acc"],
            "pnn_without_laterals": sum(without_laterals) / tasks,
        },
        "per_task": {
            "pnn": with_laterals,
            "pnn_as_stored": stored,
            "specialists_initial": [100.0 * a for a in spec_result["accuracy_matrix"][-1]],
            "specialists_initial_recomputed": specialists,
            "pnn_without_laterals": without_laterals,
        },
        "test_images_answered_differently": {
            "pnn_vs_specialists_initial": [
                int((a != b).sum()) for a, b in zip(pnn_predictions, spec_predictions, strict=True)
            ],
            "pnn_vs_pnn_without_laterals": [
                int((a != b).sum()) for a, b in zip(pnn_predictions, cut_predictions, strict=True)
            ],
        },
        "test_examples_per_task": [len(task.test) for task in stream.tasks],
        "adapter_alpha": alphas,
        "adapter_lateral_norm": lateral_norms,
        "parameters_at_end": {
            "pnn": pnn_result["model_size"][-1]["parameters"],
            "specialists_initial": spec_result["model_size"][-1]["parameters"],
        },
        "column_equals_specialist": same_weights,
        "train_seconds": {
            "pnn": pnn_result["timings"]["train"],
            "specialists_initial": spec_result["timings"]["train"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--store", required=True, type=Path, nargs="+", help="run stores")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reports = [seed_report(args.store, args.data_dir, s) for s in args.seeds]
    publish({"entry": "der-smnist-pnn", "seeds": args.seeds, "runs": reports}, args.out)


if __name__ == "__main__":
    main()
