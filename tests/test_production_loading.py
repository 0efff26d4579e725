"""Loading the user's model: factories by file or module, weights as tensors only. A pickle is
refused without being run, whatever the file is called."""

import pickle
import sys

import pytest
import torch
from torch import nn

from forgetless import ConfigError, DataError
from forgetless.production.loading import build, load_model, load_weights, save_weights

FACTORY = """
from torch import nn

def make_model():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

not_a_function = 3

def returns_a_number():
    return 7
"""


class _Payload:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "user_model.py").write_text(FACTORY)
    return tmp_path


def test_a_factory_by_file_and_by_module(factory, monkeypatch):
    by_file = build(f"{factory}/user_model.py:make_model")
    monkeypatch.syspath_prepend(str(factory))
    by_module = build("user_model:make_model")
    assert [type(m) for m in by_file] == [type(m) for m in by_module]
    sys.modules.pop("user_model", None)


@pytest.mark.parametrize(
    "spec, message",
    [("{d}/user_model.py:missing", "defines no 'missing'"),
     ("{d}/nowhere.py:make_model", "no file"),
     ("{d}/user_model.py", "expected path/to/file.py:make_model"),
     ("{d}/user_model.py:not_a_function", "not a function"),
     ("{d}/user_model.py:returns_a_number", "not a torch nn.Module"),
     ("no_such_module_anywhere:make", "cannot import")],
)  # fmt: skip
def test_unknown_or_wrong_factories_are_one_clear_error(factory, spec, message):
    with pytest.raises(ConfigError, match=message):
        build(spec.format(d=factory))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(factory, tmp_path, suffix):
    model = build(f"{factory}/user_model.py:make_model")
    path = save_weights(model, tmp_path / f"w{suffix}")
    loaded = load_model(f"{factory}/user_model.py:make_model", path)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.bin", "evil.safetensors"])
def test_pickles_are_refused_without_running_them(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, path)
    with pytest.raises(DataError):
        load_weights(path)
    assert not marker.exists()
    with open(path, "wb") as f:  # a bare pickle, not even torch's format
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(DataError):
        load_weights(path)
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(DataError, match="never unpickles"):
        load_weights(path)


def test_weights_that_do_not_fit_name_the_difference(factory, tmp_path):
    spec = f"{factory}/user_model.py:make_model"
    state = build(spec).state_dict()
    state["2.weight"] = torch.zeros(5, 3)
    save_weights(state, tmp_path / "wrong.safetensors")
    with pytest.raises(ConfigError, match=r"2.weight is \[5, 3\] in the file, \[2, 3\]"):
        load_model(spec, tmp_path / "wrong.safetensors")
    del state["2.weight"]
    save_weights(state, tmp_path / "short.safetensors")
    with pytest.raises(ConfigError, match=r"missing 2\.weight"):
        load_model(spec, tmp_path / "short.safetensors")


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="safetensors"):
        load_weights(tmp_path / "junk.safetensors")
    with pytest.raises(ConfigError, match="no weights file"):
        load_weights(tmp_path / "absent.pt")
