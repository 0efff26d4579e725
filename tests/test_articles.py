"""The seed articles from the command line, with their figures beside ours."""

import json

import pytest

from forgetless.articles import ARTICLES, article_configs
from forgetless.cli import main


@pytest.mark.slow
def test_the_binary_article_shows_forgetting_and_ewc_trading_b_for_a(capsys):
    assert main(["article", "binary", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (finetune, ewc) = ({f["label"]: f for f in run["figures"]} for run in report["runs"])
    assert finetune["A after A"]["article"] == 93.6 and ewc["B after B"]["article"] == 73.8
    # fine-tuning: A learnt, then lost to B (the article: 93.6 -> 53.6, B 95.6)
    assert finetune["A after A"]["ours"] > 90 and finetune["B after B"]["ours"] > 90
    assert finetune["A after B"]["ours"] < 60
    # EWC keeps much more of A and pays for it on B (the article: 74.4 and 73.8)
    assert ewc["A after B"]["ours"] > finetune["A after B"]["ours"] + 10
    assert ewc["B after B"]["ours"] < finetune["B after B"]["ours"] - 10
    for run in report["runs"]:
        for figure in run["figures"]:
            assert abs(figure["ours"] - figure["article"]) < 5  # near every article figure


def test_the_mnist_fashion_article_uses_the_articles_settings(capsys):
    (config,) = (c.resolved() for c in article_configs("mnist-fashion", data_dir="DATA"))
    assert (config.scenario, config.model, config.strategy) == ("mnist-fashion", "cnn", "finetune")
    assert (config.epochs, config.batch_size, config.optimizer, config.lr) == (2, 32, "adam", 1e-3)
    figures = ARTICLES["mnist-fashion"].runs[0].figures
    assert [f.article for f in figures] == [99.2, 91.1, 33.9]
    with pytest.raises(SystemExit):
        main(["article", "nope"])
    assert "invalid choice" in capsys.readouterr().err
