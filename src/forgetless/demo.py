"""``forgetless demo``: catastrophic forgetting in under a minute, offline."""

from __future__ import annotations

from collections.abc import Callable

from forgetless.experiment import RunConfig, run
from forgetless.result import Result

#: The demo's settings: a small MLP on scikit-learn's digits, 5 tasks of 2 classes each,
#: class-incremental, trained long enough that each task is learnt almost perfectly.
DEMO_CONFIG = RunConfig(
    scenario="split-digits",
    protocol="class",
    model="mlp",
    hidden=[100, 100],
    epochs=20,
    batch_size=32,
    lr=0.1,
    progress=False,
    threads=1,  # a tiny model: one thread is fastest, and the numbers do not depend on the cores
)


def run_demo(seed: int = 0, echo: Callable[[str], None] = print) -> list[Result]:
    """Fine-tuning, then joint training, on split-digits; echo each matrix and a verdict.

    Returns:
        The two results, fine-tuning first.
    """
    echo(
        "forgetless demo: a 2-layer MLP learns scikit-learn's 8x8 digits as 5 tasks of 2 classes,\n"
        "one task after another (class-incremental: at test time it must tell all 10 apart).\n"
    )
    results = []
    for strategy, blurb in (
        ("finetune", "Fine-tuning: train on each task in turn, nothing protects the past."),
        (
            "joint",
            "Joint training: all tasks at once, the upper bound no sequential learner beats.",
        ),
    ):
        config = RunConfig(**{**DEMO_CONFIG.to_dict(), "strategy": strategy, "seed": seed})
        echo(blurb)
        result = run(config)
        echo(str(result))
        echo("")
        results.append(result)
    finetune, joint = results
    echo(
        f"In one line: fine-tuning ends at {100 * finetune.metrics['acc']:.0f}% average accuracy "
        f"against {100 * joint.metrics['acc']:.0f}% for joint training: each new task overwrote "
        "what the network knew of the old ones (BWT "
        f"{100 * finetune.metrics['bwt']:+.1f} points)."
    )
    return results
