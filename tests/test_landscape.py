"""Loss landscapes and sharpness: batched grids equal the loss computed point by point, the
origin is the model's own loss, filter normalisation matches the weights filter by filter, and
the top Hessian eigenvalue matches exact ones."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian

from forgetless import ConfigError
from forgetless.analysis.landscape import (
    difference,
    filter_normalize,
    flat_width,
    loss_line,
    loss_plane,
    parameters_of,
    random_direction,
    set_parameters,
)
from forgetless.analysis.landscape_study import landscape_study
from forgetless.analysis.sharpness import power_iteration, sharpness, top_hessian_eigenvalue
from forgetless.models import CNN, ResidualCNN, build_model
from forgetless.scenarios import make_stream


@pytest.fixture(scope="module")
def digits():
    """60 test digits of the first split-digits task and the task itself."""
    task = make_stream("split-digits", seed=0).tasks[0]
    return task, task.test.inputs(slice(0, 60)).double(), task.test.y[:60]


def _models():
    # The MLP and the CNN take the fast path (first layer mixed from three products), the MLP
    # with its Linear and ReLU layers run in place; the tanh MLP runs its rest through
    # functional_call; the residual CNN, not a Sequential, the plain path.
    torch.manual_seed(0)
    tanh_mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)
    )
    return {
        "mlp": build_model("mlp", (1, 8, 8), 10, hidden=[16, 12], seed=0).double(),
        "mlp-tanh": tanh_mlp.double(),
        "cnn": CNN((1, 8, 8), 10, hidden=12).double(),
        "cnn-skip": ResidualCNN((1, 8, 8), 10, hidden=12).double(),
    }


def _loss_at(model, point, x, y):
    moved = set_parameters(copy.deepcopy(model), point).eval()
    with torch.no_grad():
        out = moved(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


@pytest.mark.parametrize("name", ["mlp", "mlp-tanh", "cnn", "cnn-skip"])
def test_plane_equals_point_by_point_evaluation(digits, name):
    _, x, y = digits
    model = _models()[name]
    d1, d2 = random_direction(model, 1), random_direction(model, 2)
    alphas, betas = torch.tensor([-1.0, 0.0, 0.4]), torch.tensor([-0.5, 0.0, 0.25, 1.0])
    # Small batches of examples (23, and fewer where max_elements says so), and the point
    # (0, 0), whose first-layer output is the shared product itself.
    plane = loss_plane(model, (x, y), d1, d2, alphas, betas, batch_size=23, max_elements=3000)
    base = parameters_of(model)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = {k: base[k] + a * d1[k] + b * d2[k] for k in base}
            loss, acc = _loss_at(model, point, x, y)
            assert plane.loss[i, j].item() == pytest.approx(loss, rel=1e-10, abs=1e-12)
            assert plane.accuracy[i, j].item() == pytest.approx(acc)


def test_a_plane_with_a_progress_bar_has_the_same_numbers(digits, capsys):
    _, x, y = digits
    model = _models()["mlp"]
    d1, d2 = random_direction(model, 1), random_direction(model, 2)
    grid = torch.linspace(-1, 1, 4)
    plain = loss_plane(model, (x, y), d1, d2, grid, grid)
    with_bar = loss_plane(model, (x, y), d1, d2, grid, grid, progress=True)
    assert torch.equal(plain.loss, with_bar.loss)
    assert capsys.readouterr().err == ""  # not a terminal: the bar stays quiet


@pytest.mark.parametrize("name", ["mlp", "cnn-skip"])
def test_landscape_at_the_origin_is_the_models_loss(digits, name):
    task, _, _ = digits
    model = _models()[name].float()
    with torch.no_grad():
        out = model(task.test.inputs())
    expected = float(F.cross_entropy(out, task.test.y))
    line = loss_line(model, task.test, random_direction(model, 0), [-0.5, 0.0, 0.5])
    assert line.loss[1].item() == pytest.approx(expected, rel=1e-5)
    grid = None if name == "mlp" else torch.linspace(-1, 1, 5)  # the default: 41 x 41
    d1, d2 = random_direction(model, 0), random_direction(model, 1)
    plane = loss_plane(model, task.test, d1, d2, grid, grid)
    middle = len(plane.alphas) // 2
    assert plane.loss[middle, middle].item() == pytest.approx(expected, rel=1e-5)  # at (0, 0)
    assert plane.loss.shape == ((41, 41) if name == "mlp" else (5, 5))
    assert plane.loss.std() > 0


def test_filter_normalisation_gives_each_filter_the_weights_norm():
    model = _models()["cnn"]
    d = random_direction(model, seed=3)
    weights = parameters_of(model)
    for name, w in weights.items():
        if w.ndim == 1:
            assert torch.equal(d[name], torch.zeros_like(w))  # biases: zero (Li et al.)
            continue
        norms_d = d[name].reshape(len(w), -1).norm(dim=1)
        norms_w = w.reshape(len(w), -1).norm(dim=1)
        torch.testing.assert_close(norms_d, norms_w)
    # Seeded: the same seed gives the same direction, another seed another one.
    assert all(torch.equal(d[k], random_direction(model, 3)[k]) for k in d)
    assert not torch.equal(d["0.weight"], random_direction(model, 4)["0.weight"])
    # bias="weights" copies the biases, as the authors' code does when they are not ignored.
    copied = filter_normalize(d, model, bias="weights")
    assert torch.equal(copied["0.bias"], weights["0.bias"])
    with pytest.raises(ConfigError, match="bias"):
        filter_normalize(d, model, bias="filter")


def test_line_to_another_model_ends_at_its_loss(digits):
    _, x, y = digits
    models = _models()
    a = models["mlp"]
    b = build_model("mlp", (1, 8, 8), 10, hidden=[16, 12], seed=1).double()
    line = loss_line(a, (x, y), b, [0.0, 0.5, 1.0])
    assert line.loss[0].item() == pytest.approx(_loss_at(a, parameters_of(a), x, y)[0])
    assert line.loss[2].item() == pytest.approx(_loss_at(a, parameters_of(b), x, y)[0])
    middle = {k: (parameters_of(a)[k] + parameters_of(b)[k]) / 2 for k in parameters_of(a)}
    assert line.loss[1].item() == pytest.approx(_loss_at(a, middle, x, y)[0])
    # Several directions at once: one row each, as when evaluated alone.
    d = [random_direction(a, 5), difference(b, a)]
    both = loss_line(a, (x, y), d, [0.0, 1.0])
    assert both.loss.shape == (2, 2)
    assert both.loss[1].tolist() == pytest.approx(line.loss[[0, 2]].tolist())


def test_units_score_only_the_tasks_head(digits):
    task, x, y = digits
    model = _models()["mlp"]
    units = list(task.units)
    line = loss_line(model, (x, y), random_direction(model, 0), [0.0], units=units)
    with torch.no_grad():
        logits = model(x)[:, units]
    local = torch.tensor([units.index(int(v)) for v in y])
    assert line.loss[0].item() == pytest.approx(float(F.cross_entropy(logits, local)))
    with pytest.raises(ConfigError, match="units"):
        loss_line(model, (x, y), random_direction(model, 0), [0.0], units=[units[0]])


def test_bad_directions_are_clear_errors(digits):
    _, x, y = digits
    model = _models()["mlp"]
    d = random_direction(model, 0)
    with pytest.raises(ConfigError, match="missing"):
        loss_line(model, (x, y), {k: v for k, v in d.items() if k != "1.bias"})
    with pytest.raises(ConfigError, match="shape"):
        loss_line(model, (x, y), {**d, "1.bias": torch.zeros(3)})
    with pytest.raises(ConfigError, match="alphas"):
        loss_line(model, (x, y), d, [])


# --- sharpness ---------------------------------------------------------------------------


def test_top_eigenvalue_of_a_quadratic():
    # f(x) = 1/2 x^T A x + b^T x has Hessian A; its eigenvalues are set by construction.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    eigenvalues = torch.tensor([7.5, 3.0, 2.0, -1.0, 0.5, 0.1], dtype=torch.float64)
    a = q.double() @ torch.diag(eigenvalues) @ q.double().T
    b = torch.arange(6, dtype=torch.float64)
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    eigen = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x + b @ x, [x], tol=1e-10, max_iter=500)
    assert eigen.converged
    assert eigen.value == pytest.approx(7.5, rel=1e-8)
    assert eigen.iterations < 500
    # The stop at max_iter: not converged, and exactly max_iter products.
    short = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x, [x], tol=1e-12, max_iter=3)
    assert short.iterations == 3 and not short.converged
    # Seeded: the same seed gives the same history.
    again = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x + b @ x, [x], tol=1e-10, max_iter=500)
    assert again.history == eigen.history
    with pytest.raises(ConfigError, match="tol"):
        power_iteration(lambda v: v, [x], tol=0.0)


def test_sharpness_of_a_tiny_network_matches_its_exact_hessian(digits):
    _, x, y = digits
    model = build_model("mlp", (1, 8, 8), 10, hidden=[6], seed=0).double()
    # Train a little so that the point is near a minimum (the top eigenvalue dominates).
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    eigen = sharpness(model, (x, y), n_examples=None, batch_size=25, tol=1e-10, max_iter=1000)
    base = parameters_of(model)
    names, shapes = list(base), [v.shape for v in base.values()]
    sizes = [v.numel() for v in base.values()]
    flat = torch.cat([v.reshape(-1) for v in base.values()])

    def loss(v):
        params = {n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    exact = torch.linalg.eigvalsh(hessian(loss, flat))
    top = exact[exact.abs().argmax()]
    assert eigen.converged
    assert eigen.value == pytest.approx(float(top), rel=1e-6)
    assert float(top) == pytest.approx(float(exact.max()))  # the largest is also the top one


def test_flat_width_of_a_parabola():
    alphas = torch.linspace(-1, 1, 21, dtype=torch.float64)
    alphas[10] = 0.0
    # loss = alpha^2: below 0.25 on [-0.5, 0.5], width 1 (the crossing between grid points).
    assert flat_width(alphas, alphas**2, rise=0.25) == pytest.approx(1.0, abs=0.01)
    assert flat_width(alphas, 4 * alphas**2, rise=0.25) == pytest.approx(0.5, abs=0.02)
    assert flat_width(alphas, 0 * alphas, rise=0.1) == pytest.approx(2.0)  # flat: the grid
    with pytest.raises(ConfigError, match="contain 0"):
        flat_width(alphas + 0.05, alphas**2)


def test_study_on_digits_is_seeded_and_complete(digits):
    _task, x, y = digits
    a = build_model("mlp", (1, 8, 8), 10, hidden=[16], seed=0)
    b = build_model("mlp", (1, 8, 8), 10, hidden=[16], seed=1)
    kwargs = dict(directions=2, resolution=11, plane_resolution=5, hessian_examples=40)
    study = landscape_study(a, (x.float(), y), b, (x.float(), y), **kwargs)
    again = landscape_study(a, (x.float(), y), b, (x.float(), y), **kwargs)
    assert torch.equal(study.lines.loss, again.lines.loss)
    assert study.sharpness.value == again.sharpness.value
    assert study.lines.loss.shape == (2, 11) and study.plane.loss.shape == (5, 5)
    assert set(study.interpolation) == {"task A", "task B"}
    assert len(study.widths) == 2 and all(0 < w <= 2 for w in study.widths)
    assert study.to_dict()["sharpness"]["value"] == study.sharpness.value


def test_cnn_with_and_without_skips_share_layers_and_weights():
    plain = build_model("cnn", (1, 28, 28), 10, seed=0)
    skip = build_model("cnn-skip", (1, 28, 28), 10, seed=0)
    count = [sum(p.numel() for p in m.parameters()) for m in (plain, skip)]
    assert count[0] == count[1]
    for p, q in zip(plain.parameters(), skip.parameters(), strict=True):
        assert torch.equal(p, q)  # the same seed gives the same initial weights
    x = torch.rand(4, 1, 28, 28)
    assert skip(x).shape == (4, 10)
    assert not torch.allclose(plain(x), skip(x))  # the shortcuts change the function


@pytest.mark.slow
def test_cli_landscape_prints_numbers_and_writes_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from forgetless.cli import main

    args = ["landscape", "--scenario", "split-digits", "--hidden", "16", "--epochs", "3"]
    args += ["--lr", "0.1", "--examples", "100", "--resolution", "9", "--directions", "2"]
    args += ["--plane-resolution", "5", "--hessian-examples", "50", "-o", str(tmp_path)]
    assert main([*args, "--store", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "sharpness (top Hessian eigenvalue)" in out and "A->B line, task B" in out
    record = __import__("json").loads((tmp_path / "landscape.json").read_text())
    assert len(record["widths"]) == 2 and len(record["plane"]["loss"]) == 5
    for stem in ("landscape_1d", "landscape_2d", "interpolation"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0
        assert (tmp_path / f"{stem}.svg").stat().st_size > 0
