"""Budget curves: the trainer's per-epoch validation primary and step counts, checked against the saved models."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from harness.networks.qnetwork import QNetwork
from harness.train.finetune import finetune_population, soft_targets, split_indices
from harness.train.regimes import Regime
from harness.train.teachers import TEACHERS, Targets

torch.set_num_threads(1)
Parents = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _net(seed: int, hidden: int = 32) -> QNetwork:
    gen = torch.Generator().manual_seed(seed)
    net = QNetwork(8, 4, hidden, dropout_rate=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def parents() -> Parents:
    x = torch.randn(400, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return x, soft_targets(_net(100)(x)), soft_targets(_net(101)(x))


def _primary(model: torch.nn.Module, x: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> float:
    with torch.no_grad():
        arg = model(x).argmax(1)
    return min(float((arg == pa.argmax(1)).double().mean()), float((arg == pb.argmax(1)).double().mean()))


def test_a_static_teacher_records_the_validation_primary_at_every_epoch_and_trains_as_before(parents: Parents) -> None:
    x, pa, pb = parents
    both = TEACHERS.get("both")
    regime = Regime("t", epochs=6, lr=3e-3, batch_size=64)
    child = _net(7)
    res = finetune_population([child], x, Targets(pa, pb, both), regime)[0]
    plain = finetune_population([child], x, both.mix(pa, pb), regime)[0]
    h = res.history
    # the parents' argmaxes change nothing the trainer selects or reports
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in res.model.state_dict().items())
    curve = ("val_primary", "initial_val_primary")
    assert {k: v for k, v in h.items() if k not in curve} == {k: v for k, v in plain.history.items() if k not in curve}
    assert plain.history["val_primary"] == [] and plain.history["initial_val_primary"] is None
    steps_per_epoch = math.ceil(h["n_train"] / 64)
    assert h["epoch_steps"] == [steps_per_epoch * (e + 1) for e in range(6)] and h["steps"] == h["epoch_steps"][-1]
    assert len(h["val_primary"]) == 6
    _, val = split_indices(len(x), regime.val_fraction, regime.seed)
    assert h["initial_val_primary"] == pytest.approx(_primary(child, x[val], pa[val], pb[val]), abs=1e-12)
    # each point against the model saved at that epoch: a run of e + 1 epochs returns epoch e's weights when e is
    # its best epoch (a child's first epochs do not depend on how many follow)
    checked = 0
    for e in range(6):
        short = finetune_population([child], x, Targets(pa, pb, both), Regime("t", epochs=e + 1, lr=3e-3,
                                                                                batch_size=64))[0]
        assert short.history["val_primary"] == h["val_primary"][:e + 1]
        if short.history["best_epoch"] == e:
            assert _primary(short.model, x[val], pa[val], pb[val]) == pytest.approx(h["val_primary"][e], abs=1e-12)
            checked += 1
    assert checked >= 3
    assert h["val_primary"][-1] > h["initial_val_primary"]  # distilling toward both moves the child toward both


def test_an_adaptive_teachers_curve_is_its_own_validation_agreement(parents: Parents) -> None:
    x, pa, pb = parents
    res = finetune_population([_net(8), _net(9)], x, Targets(pa, pb, TEACHERS.get("balanced")),
                              Regime("t", epochs=4, lr=3e-3, batch_size=64))
    for r in res:
        h = r.history
        assert h["val_primary"] == h["val_agreements"] == [min(a, b) for a, b in
                                                             zip(h["val_agreements_a"], h["val_agreements_b"])]
        assert h["initial_val_primary"] == h["initial_val_agreement"]
        assert len(h["epoch_steps"]) == 4


def test_a_stopped_child_has_as_many_curve_points_as_epochs_it_ran(parents: Parents) -> None:
    x, pa, pb = parents
    regime = Regime("t", epochs=40, lr=3e-2, batch_size=64, patience=2)
    h = finetune_population([copy.deepcopy(_net(7))], x, Targets(pa, pb, TEACHERS.get("a")), regime)[0].history
    assert h["early_stopped"] and len(h["val_primary"]) == len(h["epoch_steps"]) == len(h["val_losses"]) < 40
    assert np.all(np.diff(h["epoch_steps"]) > 0)


def test_budget_points_and_the_curve_picture_draw_the_mean_and_the_band_over_replicates() -> None:
    from harness.pictures import figure, plots

    def history(initial: float, values: list[float]) -> dict[str, object]:
        return {"initial_val_primary": initial, "val_primary": values,
                "epoch_steps": [100 * (e + 1) for e in range(len(values))]}

    crossover = [history(0.5, [0.6, 0.7, 0.8]), history(0.5, [0.62, 0.72]), history(0.5, [0.58, 0.74, 0.78])]
    control = [history(0.1, [0.4, 0.6, 0.7])]
    assert plots.budget_points(crossover[1]) == ([0, 100, 200], [0.5, 0.62, 0.72])
    assert plots.budget_points({"val_primary": []}) == ([], [])
    with figure.style():
        fig = plots.budget_curves({"slerp": crossover, "control_distill": control, "none": [{}]})
        assert fig is not None
        ax = fig.axes[0]
        mean, single = ax.lines
        assert np.asarray(mean.get_xdata()).tolist() == [0, 100, 200, 300]
        assert np.asarray(mean.get_ydata()).tolist() == pytest.approx([0.5, 0.6, 0.72, 0.79], abs=1e-6)
        assert np.asarray(single.get_ydata()).tolist() == [0.1, 0.4, 0.6, 0.7]
        assert len(ax.collections) == 1  # a band only where there are replicates to span
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels[:2] == ["slerp (3 replicates)", "control_distill (1 replicate)"]
        assert figure.png(fig)[:4] == b"\x89PNG"
        assert plots.budget_curves({"none": [{}]}) is None
