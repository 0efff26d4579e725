"""`forgetless reproduce`: the catalogue as data, the verdict, and a digits entry run for real
through the run store (cached on the second run)."""

import json
import subprocess
import sys

import pytest

from forgetless.cli import main
from forgetless.errors import ConfigError, DataError
from forgetless.reproduce import (
    CATALOGUE,
    Entry,
    Measure,
    Published,
    Run,
    Tolerance,
    compare,
    find_entry,
)
from forgetless.reproduce import catalogue as catalogue_module
from forgetless.reproduce.catalogue import acc, buffer_needed, table
from forgetless.reproduce.runner import check_data, format_markdown, reproduce

_DIGITS = {
    "scenario": "split-digits",
    "protocol": "class",
    "model": "mlp",
    "hidden": [32],
    "iterations": 60,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.01,
}
# A test-only entry on the bundled digits: class-IL fine-tuning forgets everything but the
# last task (ACC near 20%); replay keeps most of it.
DIGITS = Entry(
    name="digits-forgetting",
    title="test: fine-tuning against replay on split digits, class-IL",
    reference="none (a test entry)",
    published=(
        Published("fine-tuning", 20.0, "ACC (%): the class-IL floor, the last task alone"),
        Published("replay", 95.0, "ACC (%): what no forgetting would give", known_difference="x"),
    ),
    tolerance=Tolerance(8.0, "test"),
    minutes=0.2,
    minutes_note="test",
    runs=(
        Run("fine-tuning", {**_DIGITS, "strategy": "finetune"}),
        Run("replay", {**_DIGITS, "strategy": "replay", "strategy_params": {"buffer_size": 200}}),
    ),
    ours=table({"fine-tuning": acc("fine-tuning"), "replay": acc("replay")}),
    seeds=(0,),
)


def test_listing_imports_no_torch_and_gives_every_field():
    code = (
        "import sys; from forgetless.cli import main; rc = main(['reproduce', '--list', "
        "'--json']); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    entries = json.loads(out.stdout)
    assert [e["name"] for e in entries] == list(CATALOGUE)
    for e in entries:
        assert {"name", "reference", "published", "tolerance", "minutes"} <= set(e)
        assert e["published"] and all({"label", "value", "what"} <= set(f) for f in e["published"])
        assert e["tolerance"]["points"] > 0 and e["tolerance"]["reason"]
        assert e["minutes"] > 0


def test_every_entry_builds_its_configs_and_names_the_data_it_reads():
    from forgetless.scenarios import PRESETS

    for entry in CATALOGUE.values():
        configs = entry.configs()
        assert len(configs) == len(entry.runs)
        sources = {s for c in configs for s in PRESETS[c.scenario].sources}
        assert sources == set(entry.data), entry.name
        # every published figure has a figure of ours, and no figure of ours is unpublished
        labels = {f.label for f in entry.published}
        assert len(labels) == len(entry.published), entry.name


def test_the_articles_entries_are_built_from_articles_py():
    from forgetless.articles import ARTICLES

    binary = CATALOGUE["article-binary"]
    figures = [f for r in ARTICLES["binary"].runs for f in r.figures]
    assert [f.value for f in binary.published] == [f.article for f in figures]
    assert [r.label for r in binary.runs] == [r.label for r in ARTICLES["binary"].runs]


def test_the_verdict_against_hand_made_numbers():
    ours = {"fine-tuning": Measure(27.9), "replay": Measure(60.0)}
    verdict = compare(DIGITS, ours)
    fine, replay = verdict["figures"]
    assert fine["difference"] == pytest.approx(7.9) and fine["within"]
    assert replay["difference"] == pytest.approx(-35.0) and not replay["within"]
    assert not verdict["within_tolerance"]
    assert verdict["unexplained"] == []  # replay's difference is a known one
    verdict = compare(DIGITS, {"fine-tuning": Measure(28.1), "replay": Measure(95.0)})
    assert verdict["unexplained"] == ["fine-tuning"] and not verdict["within_tolerance"]
    assert compare(DIGITS, {"fine-tuning": Measure(12.0), "replay": Measure(103.0)})[
        "within_tolerance"
    ]
    # a figure we could not compute is outside, never within
    assert compare(DIGITS, {"replay": Measure(95.0)})["unexplained"] == ["fine-tuning"]


def test_buffer_needed_interpolates_on_a_log_scale():
    assert buffer_needed([100, 1000], [80.0, 90.0], 85.0) == pytest.approx(316.23, abs=0.01)
    assert buffer_needed([100, 1000], [86.0, 90.0], 85.0) == 100.0
    assert buffer_needed([100, 1000], [70.0, 80.0], 85.0) is None


def test_unknown_name_suggests_the_closest(capsys):
    with pytest.raises(ConfigError, match="did you mean 'der-smnist'"):
        find_entry("der-smnst")
    assert main(["reproduce", "fisher-variant"]) == 2
    assert "did you mean 'fisher-variants'" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    from forgetless.data import catalog

    monkeypatch.delenv("FORGETLESS_DATA", raising=False)
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (tmp_path / "system",))
    with pytest.raises(DataError, match="der-smnist needs mnist"):
        check_data(CATALOGUE["der-smnist"], tmp_path)
    check_data(CATALOGUE["article-binary"], tmp_path)  # generated data: nothing to find
    store = tmp_path / "store"
    rc = main(["reproduce", "der-smnist", "--data-dir", str(tmp_path), "--store", str(store)])
    assert rc == 2 and not store.exists()


@pytest.mark.slow
def test_a_digits_entry_runs_through_the_store_and_a_rerun_trains_nothing(
    tmp_path, monkeypatch, capsys
):
    store = tmp_path / "store"
    first = reproduce(DIGITS, store=store)
    assert first["trained"] == 2 and first["reused"] == 0
    fine, replay = (first["ours"][k]["value"] for k in ("fine-tuning", "replay"))
    # real training: class-IL fine-tuning forgets, replay measurably less
    assert fine < 35.0 and replay > fine + 20.0
    assert first["within_tolerance"] == (abs(fine - 20.0) <= 8.0 and abs(replay - 95.0) <= 8.0)
    assert set(first["run_ids"]) == {"fine-tuning", "replay"}
    assert all((store / ids[0] / "result.json").is_file() for ids in first["run_ids"].values())

    monkeypatch.setitem(catalogue_module.CATALOGUE, DIGITS.name, DIGITS)
    rc = main(["reproduce", DIGITS.name, "--store", str(store), "--json"])
    assert rc == 0
    second = json.loads(capsys.readouterr().out)
    assert second["trained"] == 0 and second["reused"] == 2
    assert second["ours"] == first["ours"] and second["run_ids"] == first["run_ids"]
    assert {"ours", "published", "within_tolerance", "tolerance", "minutes"} <= set(second)

    rc = main(["reproduce", DIGITS.name, "--store", str(store), "--check"])
    out = capsys.readouterr().out
    assert "fine-tuning" in out and "verdict" in out
    assert rc == (1 if compare(DIGITS, _measures(second))["unexplained"] else 0)
    table_text = format_markdown(second)
    assert (
        "| fine-tuning |" in table_text and "forgetless reproduce digits-forgetting" in table_text
    )
    assert "; ours: one seed, 0" in table_text and "std over seeds 0." not in table_text


def _measures(reproduction):
    return {k: Measure(v["value"]) for k, v in reproduction["ours"].items()}


def test_the_entries_run_the_configs_of_the_benchmarks_behind_benchmarks_md(monkeypatch):
    """Same config hash, same run: an entry's figures are the benchmark script's, seed for
    seed (so BENCHMARKS.md's tables can be regenerated from the entries)."""
    from pathlib import Path

    from forgetless.experiment import config_hash

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import dataclasses

    import der_table
    import fisher_variants
    import isolation
    import plasticity
    import pmnist_init
    import regularisation

    def ours(name):
        entry = CATALOGUE[name]
        return {r.label: config_hash(c) for r, c in zip(entry.runs, entry.configs(), strict=True)}

    theirs = {
        "der-smnist": {
            "SGD": der_table.smnist(0, None, "finetune", 0.03, {}),
            "joint": der_table.smnist(0, None, "joint", 0.03, {}),
            **{
                label: der_table.smnist_config(0, None, strategy, 500)
                for label, strategy in (
                    ("ER", "replay"),
                    ("A-GEM", "agem"),
                    ("iCaRL", "icarl"),
                    ("GSS", "gss"),
                    ("DER", "der"),
                    ("DER++", "derpp"),
                )
            },
        },
        "der-pmnist": {
            "SGD": regularisation.pmnist(0, None, "finetune"),
            "SI": regularisation.pmnist(0, None, "si"),
            "oEWC": regularisation.pmnist(0, None, "online-ewc lam 1.4"),
            "ER": der_table.pmnist(
                0, None, "replay", 0.2, {"buffer_size": 500, "replay_batch_size": 128}
            ),
        },
        "fisher-variants": {
            "exact": fisher_variants.config(0, None, "exact", 1e5),
            "batched": fisher_variants.config(0, None, "batched", 1e10),
            "none": fisher_variants.config(0, None, None),
        },
        "three-scenarios-lwf": {
            "LwF, class-IL": regularisation.lwf(0, None, "lwf", "class"),
            "LwF, task-IL": regularisation.lwf(0, None, "lwf", "task"),
        },
        "der-smnist-pnn": {
            "PNN": isolation.smnist(0, None, "pnn"),
            "specialists from the initial weights": isolation.smnist(
                0, None, "specialists-initial"
            ),
        },
        "article-binary": {
            "fine-tuning": regularisation.two_task(0, None),
            "EWC, lam 1e6": regularisation.two_task(0, 1e6),
        },
        "der-pmnist-their-init": {
            "SGD": pmnist_init.config("sgd", 0, None),
            "oEWC, their Fisher": pmnist_init.config(
                "online-ewc weighted-empirical lam 1.4", 0, None
            ),
        },
        "plasticity": {
            label: dataclasses.replace(plasticity.PLASTICITY, data_dir="DATA").config(*spec)
            for label, spec in zip(
                [r.label for r in CATALOGUE["plasticity"].runs],
                plasticity.STRATEGIES.values(),
                strict=True,
            )
        },
    }
    for name, configs in theirs.items():
        mine = ours(name)
        for label, config in configs.items():
            assert mine[label] == config_hash(config), (name, label)


def test_every_entry_declares_the_tables_of_benchmarks_md_it_regenerates():
    for entry in CATALOGUE.values():
        assert entry.tables, entry.name


@pytest.mark.slow
def test_markdown_prints_every_table_of_the_entry_from_real_runs(tmp_path, capsys, monkeypatch):
    """article-binary for real in a temporary store: --markdown prints the comparison and the
    seed article's table (a row per reported figure and BWT), its cells the runs' own. Its runs
    train 2 epochs, not the article's 20: the table, not the article's figures, is under test
    here (tests/test_articles.py runs the article's settings)."""
    import dataclasses

    entry = CATALOGUE["article-binary"]
    short = tuple(Run(run.label, {**run.settings, "epochs": 2}) for run in entry.runs)
    monkeypatch.setitem(
        catalogue_module.CATALOGUE, entry.name, dataclasses.replace(entry, runs=short)
    )
    store = tmp_path / "store"
    rc = main(["reproduce", "article-binary", "--store", str(store), "--json"])
    assert rc == 0
    reproduction = json.loads(capsys.readouterr().out)
    (article,) = reproduction["tables"]
    assert article["head"][1:] == [
        "fine-tuning (ours)",
        "fine-tuning (article)",
        "EWC, lam 1e6 (ours)",
        "EWC, lam 1e6 (article)",
    ]
    assert [row[0] for row in article["rows"]] == [
        "A after A",
        "A after B",
        "B after B",
        "BWT (points)",
    ]
    # the table's cells are the stored runs' accuracies, recomputed here from result.json
    stored = [
        json.loads((store / run_id / "result.json").read_text())
        for run_id in reproduction["run_ids"]["fine-tuning"]
    ]
    after_b = [100 * r["accuracy_matrix"][1][0] for r in stored]
    mean = sum(after_b) / len(after_b)
    assert article["rows"][1][1].startswith(f"{mean:.1f} ± ")
    assert article["rows"][1][2] == "53.6"
    assert article["rows"][3][1].startswith(
        f"{100 * sum(r['metrics']['bwt'] for r in stored) / 3:.1f}"
    )

    rc = main(["reproduce", "article-binary", "--store", str(store), "--markdown"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "| figure | ours | published | ours - published | within ± tolerance |" in text
    assert "|  | fine-tuning (ours) | fine-tuning (article) |" in text
    assert "forgetless reproduce article-binary --seeds 0,1,2\n" in text
    assert f"| A after B | {article['rows'][1][1]} | 53.6 |" in text
    assert "mean ± sample std over seeds 0, 1, 2" in text


@pytest.mark.slow
def test_the_plasticity_entry_runs_through_the_store_and_measures_the_stored_weights(tmp_path):
    """The plasticity entry's figures and table on a short digits stream: plain SGD's accuracy
    on each new task, and the unit measures read back from the weights the store kept."""
    import dataclasses

    from forgetless.reproduce.catalogue import PLASTICITY_RUNS, plasticity_table
    from forgetless.studies.plasticity import PlasticitySettings, plasticity_study

    settings = PlasticitySettings(
        data="digits", tasks=12, train_per_task=400, test_per_task=100, hidden=(32, 32),
        lr=0.3, batch_size=16, epochs=2, probe=100,
    )  # fmt: skip
    entry = dataclasses.replace(
        CATALOGUE["plasticity"],
        runs=tuple(Run(label, settings.settings(s, p)) for _, label, s, p in PLASTICITY_RUNS),
        tables=(plasticity_table(settings, {label: label for _, label, _, _ in PLASTICITY_RUNS}),),
        seeds=(0,),
        data=(),
    )
    store = tmp_path / "store"
    reproduction = reproduce(entry, store=store)
    assert reproduction["trained"] == 4
    stored = json.loads(
        (store / reproduction["run_ids"]["plain SGD"][0] / "result.json").read_text()
    )
    diagonal = [100 * stored["accuracy_matrix"][i][i] for i in range(12)]
    first, last = sum(diagonal[:10]) / 10, sum(diagonal[-10:]) / 10
    ours = reproduction["ours"]
    assert ours["plain SGD: first 10 tasks"]["value"] == pytest.approx(first)
    assert ours["plain SGD: last 10 - first 10"]["value"] == pytest.approx(last - first)
    assert first > 50  # the digits tasks are learnt: a real run
    (table,) = reproduction["tables"]
    assert [row[0] for row in table["rows"]] == [label for _, label, _, _ in PLASTICITY_RUNS]
    assert table["rows"][0][1] == f"{first:.1f} -> {last:.1f}%"
    # the same measures as the study computes them from the same store (nothing trained)
    (run,) = plasticity_study(settings, [("finetune", {})], [0], store)
    dormant = [100 * d for d in run.series("dormant")]
    assert table["rows"][0][2] == f"{sum(dormant[:10]) / 10:.1f} -> {sum(dormant[-10:]) / 10:.1f}%"
    assert "4 runs trained" not in format_markdown(reproduction)
    assert "| plain SGD |" in format_markdown(reproduction)
    assert reproduce(entry, store=store)["trained"] == 0


def test_the_entries_keep_their_run_ids():
    """Every entry's configs hash as when the runs behind BENCHMARKS.md were stored: a change
    here renames the runs, and every reproduction would train again. If a config must change,
    say so in BENCHMARKS.md and update the digest."""
    import hashlib

    from forgetless.experiment import config_hash

    rows = [
        [name, run.label, config_hash(config)]
        for name, entry in CATALOGUE.items()
        for run, config in zip(entry.runs, entry.configs(), strict=True)
    ]
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16] == "3948e50c866ddce9"
    # the data folder is where the files lie, not what the runs compute
    assert [config_hash(c) for c in CATALOGUE["der-smnist"].configs(data_dir="/elsewhere")] == [
        config_hash(c) for c in CATALOGUE["der-smnist"].configs()
    ]


def test_every_entry_makes_its_tables_from_results_of_its_runs():
    """Each entry's tables, from stand-in Results of every run (hand-made numbers: the shapes
    and the figures' placement, not the training, are under test; the plasticity table reads
    stored weights and is run for real above)."""
    from pathlib import Path
    from types import SimpleNamespace

    from forgetless.reproduce.entry import Reproduced, Table

    for entry in CATALOGUE.values():
        if entry.name == "plasticity":
            continue
        results = {}
        for k, run in enumerate(entry.runs):
            per_seed = []
            for seed in (0, 1):
                value = 0.5 + 0.01 * k + 0.001 * seed
                matrix = [[value] * 5 for _ in range(5)]
                per_seed.append(
                    SimpleNamespace(
                        metrics={"acc": value, "bwt": -value / 10},
                        accuracy_matrix=matrix,
                        task_aware_matrix=[[min(1.0, value + 0.4)] * 5] * 5,
                    )
                )
            results[run.label] = per_seed
        verdict = compare(entry, entry.ours(results))
        reproduced = Reproduced(results, {}, (0, 1), Path("unused"), verdict)
        for make in entry.tables:
            table = make(reproduced)
            assert isinstance(table, Table) and table.rows, entry.name
            assert all(len(row) == len(table.head) for row in table.rows), entry.name
            assert "seeds 0, 1" in table.caption, entry.name  # says what it averages
            text = table.markdown()
            assert text.count("\n") == len(table.rows) + 4, entry.name
            assert Table.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    # a row's ACC is its run's, mean ± std over the seeds, in percent
    der = CATALOGUE["der-smnist"]
    k = [r.label for r in der.runs].index("ER")
    results = {
        r.label: [SimpleNamespace(metrics={"acc": 0.8, "bwt": 0.0}, task_aware_matrix=None)] * 2
        for r in der.runs
    }
    results["ER"] = [
        SimpleNamespace(metrics={"acc": a, "bwt": 0.0}, task_aware_matrix=[[0.9, 1.0]])
        for a in (0.85, 0.87)
    ]
    verdict = compare(der, der.ours(results))
    (table,) = (make(Reproduced(results, {}, (0, 1), Path("x"), verdict)) for make in der.tables)
    row = table.rows[k]
    assert row[:4] == ("ER (`replay`)", "**86.00 ± 1.41**", "85.00, 87.00", "95.00 ± 0.00")
    assert row[4:] == ("86.12", "-0.12")
