"""Settings shared by the tests of the task-IL methods (isolation, HAT, specialists, HyperMask).

Task-IL split digits, small enough for a quick suite, long enough to learn each task. One
fine-tuning run on them (the ``task_il_finetune`` fixture of conftest.py) is the forgetting
each method is measured against.
"""

QUICK = dict(
    scenario="split-digits",
    protocol="task",
    hidden=[32, 32],
    iterations=80,
    optimizer="adam",
    lr=0.005,
    threads=1,
    progress=False,
)
