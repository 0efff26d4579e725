"""``forgetless demo``: catastrophic forgetting, two mitigations and the bound, offline."""

from __future__ import annotations

from collections.abc import Callable

from forgetless.experiment import RunConfig, run
from forgetless.result import Result

#: The demo's settings: a small MLP on scikit-learn's digits, 5 tasks of 2 classes each,
#: class-incremental; the loop settings are split-digits' own (20 epochs of Adam at 1e-3,
#: batch 32), long enough that each task is learnt almost perfectly.
DEMO_CONFIG = RunConfig(
    scenario="split-digits",
    protocol="class",
    model="mlp",
    hidden=[100, 100],
    progress=False,
    threads=1,  # a tiny model: one thread is fastest, and the numbers do not depend on the cores
)

#: How to read a matrix, one plain line each.
DEFINITIONS = (
    "How to read the tables: row 'after task i' is the accuracy (%) on every task once task i\n"
    "  has been trained; the 'random init' row is the untrained network (chance: the floor).\n"
    "  ACC: the mean accuracy over all tasks at the end (the last row's mean).\n"
    "  BWT: the mean change on each earlier task from just after it was learnt to the end\n"
    "       (negative: forgotten; -100 would be total loss).\n"
)

#: The runs of the demo: (strategy, protocol, strategy parameters, what it shows).
DEMO_RUNS: tuple[tuple[str, str, dict, str], ...] = (
    (
        "finetune",
        "class",
        {},
        "1. The collapse. Fine-tuning: train on each task in turn, nothing protects the past.",
    ),
    (
        "replay",
        "class",
        {"buffer_size": 200},
        "2. A mitigation that works: replay. 200 stored examples of earlier tasks are mixed "
        "into\n   every batch.",
    ),
    (
        "ewc",
        "task",
        {},
        "3. A mitigation that works when the task is given: EWC (elastic weight consolidation)\n"
        "   pulls the weights that mattered for earlier tasks back to their old values. With\n"
        "   the task given (a head per task, --protocol task):",
    ),
    (
        "joint",
        "class",
        {},
        "4. The bound. Joint training: all tasks at once, what no sequential learner beats.",
    ),
)


def run_demo(seed: int = 0, echo: Callable[[str], None] = print) -> dict[str, Result]:
    """Fine-tuning (the collapse), replay and EWC (mitigations), joint training (the bound)
    on split-digits; echo each matrix, then a summary.

    Returns:
        The results by name, in the order of :data:`DEMO_RUNS` (``finetune``, ``replay``,
        ``ewc``, ``joint``), then ``finetune-task``: fine-tuning with the task given, EWC's
        reference.
    """
    echo(
        "forgetless demo: a 2-layer MLP learns scikit-learn's 8x8 digits as 5 tasks of 2 "
        "classes,\none task after another (class-incremental: at test time it must tell all "
        "10 apart).\n"
    )
    echo(DEFINITIONS)
    results = []
    for strategy, protocol, params, blurb in DEMO_RUNS:
        echo(blurb)
        result = _run(strategy, protocol, params, seed)
        echo(str(result))
        if strategy == "ewc":
            reference = _run("finetune", protocol, {}, seed)
            echo(
                f"   Fine-tuning on the same task-given stream: ACC "
                f"{100 * reference.metrics['acc']:.1f}, BWT "
                f"{100 * reference.metrics['bwt']:+.1f}. (Without the task, all ten classes on "
                "one output,\n   EWC cannot stop a new task's classes from taking over: it "
                "ends near fine-tuning.)"
            )
        echo("")
        results.append(result)
    finetune, replay, ewc, joint = results
    echo("In short (ACC, BWT in points):")
    for name, result in (
        ("fine-tuning", finetune),
        ("replay, 200 examples", replay),
        ("EWC, task given", ewc),
        ("fine-tuning, task given", reference),
        ("joint (the bound)", joint),
    ):
        m = result.metrics
        echo(f"  {name:<25} ACC {100 * m['acc']:5.1f}   BWT {100 * m['bwt']:+6.1f}")
    names = [strategy for strategy, *_ in DEMO_RUNS]
    echo(
        f"Fine-tuning ends at {100 * finetune.metrics['acc']:.0f}% against "
        f"{100 * joint.metrics['acc']:.0f}% for joint training: each new task overwrote what "
        f"the network knew of the old ones; replay keeps {100 * replay.metrics['acc']:.0f}%."
    )
    return {**dict(zip(names, results, strict=True)), "finetune-task": reference}


def _run(strategy: str, protocol: str, params: dict, seed: int) -> Result:
    base = DEMO_CONFIG.to_dict()
    return run(
        RunConfig(
            **{**base, "strategy": strategy, "protocol": protocol, "strategy_params": params,
               "seed": seed}
        )
    )  # fmt: skip
