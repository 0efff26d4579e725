"""Shared test settings, and a tiny generated text corpus (no corpus is ever committed)."""

import random

import pytest
import torch

# The suite trains many tiny models: one thread is fastest for them and keeps runs repeatable
# on machines where other work competes for the cores.
torch.set_num_threads(1)


def language(letters: str, lines: int, seed: int) -> str:
    """Lines of words over ``letters``, where a letter is followed by the next one of the
    alphabet 70% of the time: a little structure for a model to learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = []
        for _ in range(8):
            word = [rng.choice(letters)]
            for _ in range(rng.randint(1, 4)):
                follows = letters[(letters.index(word[-1]) + 1) % len(letters)]
                word.append(follows if rng.random() < 0.7 else rng.choice(letters))
            words.append("".join(word))
        out.append(" ".join(words))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def two_domains() -> dict[str, str]:
    """A general domain over ``a..h`` and a second one over ``n..u`` (about 18k characters
    each): what is learnt of one says nothing of the other."""
    return {"general": language("abcdefgh", 500, 0), "second": language("nopqrstu", 500, 1)}


@pytest.fixture
def sweeps_run(monkeypatch):
    """The reports of every call to the one sweep runner during a test, in order (a study's
    second call with the same store shows ``done == []``: nothing trained)."""
    from forgetless import sweeps

    reports, run_sweep = [], sweeps.run_sweep

    def recording(*args, **kwargs):
        reports.append(run_sweep(*args, **kwargs))
        return reports[-1]

    monkeypatch.setattr(sweeps, "run_sweep", recording)
    return reports


# Crash tests of the command line: a child process that kills itself with SIGKILL at a chosen
# write point of the run store (forgetless.runs.faults) is a kill -9 at a known moment, so a
# short run does, where a kill from outside needed a run long enough to catch it part way.
COMMAND_LINE = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def traced(tmp_path):
    """``traced(execute)``: calls ``execute()`` with the write points logged; returns what it
    returned and the names of the points it reached, in order."""
    from forgetless.runs import faults

    def trace(execute):
        log = tmp_path / "write-points.txt"
        log.unlink(missing_ok=True)
        faults.arm(None, log=str(log))
        try:
            returned = execute()
        finally:
            faults.arm(None)
        return returned, log.read_text().splitlines()

    return trace


@pytest.fixture
def killed_command():
    """``killed_command(args, target, fork=True)``: runs ``forgetless ARGS`` in a child process
    that kills itself with SIGKILL at its ``target``-th write point (counting from 1); fails
    unless it died so; returns the child's pid. The child is this process forked (torch already
    imported: seconds less each), or with ``fork=False`` a new interpreter."""
    import os
    import signal
    import subprocess
    import sys
    import warnings

    from forgetless.cli import main
    from forgetless.runs import faults

    def kill(args, target, fork=True):
        if not fork:
            child = subprocess.Popen(
                [sys.executable, "-c", COMMAND_LINE, *args],
                env={**os.environ, faults.ENV: f"{target}:kill"},
                stdout=subprocess.DEVNULL,
            )
            assert child.wait(300) == -signal.SIGKILL, "the run ended before its write point"
            return child.pid
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            try:
                warnings.simplefilter("ignore")
                faults.arm(target, "kill")
                main(args)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"the run ended before its write point (status {status})"
        )
        return pid

    return kill


@pytest.fixture(scope="session")
def task_il_finetune():
    """Fine-tuning on ``task_il.QUICK``: one run, read (never changed) by the tests of the
    task-IL methods, which must beat the forgetting it shows."""
    from forgetless.experiment import run
    from task_il import QUICK

    return run(strategy="finetune", **QUICK)
