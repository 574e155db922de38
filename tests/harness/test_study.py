"""The study's library side: its space from the declarations, a trial's child, telling, confirming, summarising."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.core.errors import HarnessError, SpaceError
from harness.search import study as lib
from harness.search import study_summary
from harness.search.space import build_space
from harness.search.suggest import Range, parse_range, study_space, suggest, trial_spec

optuna = pytest.importorskip("optuna")


def _grid(**levels: tuple[str, ...]) -> list:
    return build_space("custom", modes=("random", "layer", "weighted"), levels={"regime": ("short", "long"),
                                                                               **levels})


def test_the_study_space_widens_the_grid_to_the_declared_ranges() -> None:
    space = study_space(_grid(), given={}, ranges={}, controls=True)
    assert space.operators == ("random", "layer", "weighted", "control_a", "control_b", "control_distill")
    assert space.params["weighted"]["alpha"] == Range(0.0, 1.0, False, float)  # ALPHA's low/high
    assert space.params["random"]["seed"] == (0, 1, 2)  # no upper bound: the grid's values
    assert space.params["control_distill"]["seed"] == (0,)
    assert space.axes == {"align": ("none",), "regime": ("short", "long"), "teacher": ("a",)}
    narrowed = study_space(_grid(), given={"alpha": (0.3, 0.7)}, ranges={}, controls=False)
    assert narrowed.params["weighted"]["alpha"] == (0.3, 0.7) and "control_a" not in narrowed.operators
    ranged = study_space(_grid(), given={}, ranges={"alpha": parse_range("alpha", "0.2..0.4", float)},
                         controls=False)
    assert ranged.params["random"]["alpha"] == Range(0.2, 0.4)
    with pytest.raises(SpaceError, match=r"alpha=0.2..1.5: alpha of the random operator must be in \[0, 1\], got 1.5"):
        study_space(_grid(), given={}, ranges={"alpha": Range(0.2, 1.5)}, controls=False)


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("0.2..0.1", float, "needs finite LOW < HIGH"), ("0..1:log", float, "LOW > 0 on a log scale"),
    ("a..b", float, "is not a range of floats"), ("1..5:sqrt", int, "only a number takes a range"),
    ("1.5..3", int, "is not a range of ints"),
])
def test_a_bad_range_is_one_line_naming_the_fix(text: str, kind: type, message: str) -> None:
    with pytest.raises(SpaceError, match=message) as exc:
        parse_range("alpha", text, kind)
    assert "LOW..HIGH" in str(exc.value) and exc.value.field == "param"


def test_a_trial_is_a_child_and_a_sampled_regime_field_names_its_regime() -> None:
    space = study_space(_grid(), given={}, ranges={"regime.lr": parse_range("regime.lr", "1e-4..1e-2:log", float),
                                                   "regime.epochs": parse_range("regime.epochs", "2..4", int)},
                        controls=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    choice = suggest(trial, space)
    spec = trial_spec(choice, space.regimes, index=trial.number, prefix="t0000", searched=space.searched)
    regime = spec.regime
    assert 1e-4 <= regime.lr <= 1e-2 and regime.epochs in (2, 3, 4)
    assert regime.name.startswith(f"{choice['levels']['regime']}_epochs{regime.epochs}_lr")
    assert spec.child_id.startswith("t0000_") and spec.child_id.endswith(regime.name)
    assert set(trial.params) >= {"operator", "regime", "regime.lr", "regime.epochs"}
    with pytest.raises(SpaceError, match="not a regime field a study can sample"):
        study_space(_grid(), given={}, ranges={"regime.nope": Range(1, 2)}, controls=False)


def test_the_same_choices_with_another_replicate_share_the_recipe_unit_and_not_the_seeds() -> None:
    space = study_space(_grid(), given={}, ranges={}, controls=False)
    choice = {"operator": "random", "params": {"seed": 1, "alpha": 0.25}, "levels": {"regime": "short",
                                                                                      "align": "none", "teacher": "a"},
              "regime_fields": {}}
    first = trial_spec(choice, space.regimes, index=4, prefix="t0004", searched=space.searched)
    again = trial_spec(choice, space.regimes, index=4, prefix="t0004_r1", replicate=1_000_004,
                       searched=space.searched)
    assert first.unit_id == again.unit_id == "random_a0p25_s1_short"
    assert first.crossed_recipe.kwargs["seed"] == 1 and again.crossed_recipe.kwargs["seed"] != 1
    assert first.regime.seed != again.regime.seed and again.child_id == "t0004_r1_random_a0p25_s1_short"


def test_storage_urls_and_what_outputs_show_of_them() -> None:
    assert lib.storage_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert lib.storage_url("sqlite:///x.db") == "sqlite:///x.db"
    assert lib.redacted("postgresql://u:secret@h:5432/db") == "postgresql://u@h:5432/db"
    assert lib.redacted("runs/study.log") == "runs/study.log"
    with pytest.raises(HarnessError, match="cannot open the study storage 'nosuch://x'"):
        lib.open_storage("nosuch://x")


def _record(child_id: str, primary: float | None, status: str = "ok") -> dict:
    return {"child_id": child_id, "status": status, "primary": primary, "unit": child_id.split("_", 1)[1]}


def test_told_confirmed_and_summarised() -> None:
    study = lib.open_study(optuna.storages.InMemoryStorage(), "s", ["primary"], lib.make_sampler("random", 0, 1))
    trials = [lib.ask(study) for _ in range(4)]
    for t in trials:
        t.suggest_float("x", 0, 1)
    assert lib.tell(study, trials[0], _record("t0000_a", 0.7), ["primary"]) == "complete"
    assert lib.tell(study, trials[1], _record("t0001_b", 0.4, "degenerate"), ["primary"]) == "complete"
    assert lib.tell(study, trials[2], _record("t0002_c", None, "diverged"), ["primary"]) == "fail"
    lib.fail(study, trials[3], "lost", "the session ended")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert [r["child_id"] for r in lib.finished_records(study)] == ["t0000_a", "t0001_b", "t0002_c"]
    todo = lib.to_confirm(study, 1, 2)
    assert [(c.base.number, c.replicate) for c in todo] == [(0, 1), (0, 2)]
    lib.add_confirmation(study, todo[0].base, _record("t0000_r1_a", 0.6), ["primary"], {"host": "h"})
    assert [(c.base.number, c.replicate) for c in lib.to_confirm(study, 1, 2)] == [(0, 2)]
    assert lib.add_confirmation(study, todo[0].base, _record("t0000_r1_a", 0.6), ["primary"], {}) == "duplicate"
    summary = study_summary.summarize(study, ["primary"], name="s", storage="mem", session="x",
                                      asked=[0, 1, 2, 3], failed_dead=[])
    assert summary["counts"] == {"complete": 3, "fail": 2} and summary["confirmation_runs"] == 1
    assert summary["best"]["child_id"] == "t0000_a" and summary["best"]["number"] == 0
    assert summary["best"]["alone"] == 0.7 and summary["best"]["mean"] == pytest.approx(0.65)
    text = "\n".join(study_summary.summary_lines(summary))
    assert "5 trials: 3 complete (1 of them confirmation runs), 2 failed" in text
    assert "0.7000 alone, 0.6500 over it and 1 confirmation run(s): it shrank by +0.0500" in text
    with pytest.raises(HarnessError, match="maximises primary, not primary,return"):
        lib.open_study(study._storage, "s", ["primary", "return"], lib.make_sampler("tpe", 0, 2))


def test_two_objectives_give_a_pareto_front() -> None:
    study = lib.open_study(optuna.storages.InMemoryStorage(), "p", ["primary", "return"],
                           lib.make_sampler("nsga2", 0, 2))
    for i, (p, r) in enumerate([(0.8, 100.0), (0.7, 200.0), (0.6, 50.0)]):
        t = lib.ask(study)
        t.suggest_float("x", 0, 1)
        t.set_user_attr("child_id", f"t{i:04d}")
        lib.tell(study, t, {"child_id": f"t{i:04d}", "status": "ok", "primary": p, "return": {"mean": r}},
                 ["primary", "return"])
    summary = study_summary.summarize(study, ["primary", "return"], name="p", storage="mem", session="x",
                                      asked=[0, 1, 2], failed_dead=[])
    assert sorted(t["child_id"] for t in summary["pareto"]) == ["t0000", "t0001"]
    assert "Pareto front (primary, return): " in "\n".join(study_summary.summary_lines(summary))


def test_a_dead_session_s_trial_is_failed_and_a_live_one_left_running() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = lib.open_study(storage, "d", ["primary"], lib.make_sampler("random", 0, 1))
    dead, live, elsewhere = (lib.ask(study) for _ in range(3))
    for t, host, pid in ((dead, "here", 1), (live, "here", 2), (elsewhere, "there", 1)):
        t.set_user_attr("host", host)
        t.set_user_attr("pid", pid)
    assert lib.fail_unfinished(study, storage, "here", alive=lambda pid: pid == 2) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "RUNNING"]
    assert study.trials[0].user_attrs["status"] == "lost"


@pytest.mark.parametrize(("name", "objectives", "message"), [
    ("cmaes", 2, "CMA-ES optimises one objective"), ("grid", 1, "unknown sampler 'grid'"),
])
def test_sampler_choices(name: str, objectives: int, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        lib.make_sampler(name, 0, objectives)
    tpe = lib.make_sampler("tpe", 7, 1)
    assert tpe._multivariate and tpe._constant_liar and lib.session_seed(0, 16) != lib.session_seed(0, 0)


def test_the_library_imports_without_optuna_and_a_study_says_what_to_install() -> None:
    code = ("import sys; import harness.search.study as s, harness.search.suggest, pytest_crossover.study; "
            "assert 'optuna' not in sys.modules, 'imported optuna'\n"
            "sys.modules['optuna'] = None  # as if it were not installed\n"
            "try:\n    s.open_storage('x.log')\nexcept s.HarnessError as e:\n    print(e.field, e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("search a study needs optuna; install the study extra: "
                                   "pip install 'pytest-crossover[study]'")


def test_a_per_layer_parameter_is_one_dimension_per_layer_of_the_parents() -> None:
    grid = build_space("custom", modes=("weighted_layerwise",), grids={"layer_alphas": ((0.5,),)},
                       levels={"regime": ("short",)})
    space = study_space(grid, given={}, ranges={}, controls=False, layers=3)
    per_layer = space.params["weighted_layerwise"]["layer_alphas"]
    assert per_layer.keys == ("layer_alphas_l0", "layer_alphas_l1", "layer_alphas_l2")
    assert space.describe()["params"]["weighted_layerwise"]["layer_alphas"] == {"per_layer": 3, "each": "0..1"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    trial = study.ask()
    choice = suggest(trial, space)
    alphas = choice["params"]["layer_alphas"]
    assert alphas == tuple(trial.params[f"weighted_layerwise.layer_alphas_l{i}"] for i in range(3))
    assert len(set(alphas)) == 3 and all(0 <= a <= 1 for a in alphas)
    spec = trial_spec(choice, space.regimes, index=0, prefix="t0000", searched=space.searched)
    assert spec.child_id == ("t0000_weighted_layerwise_a0p50_sNone_la" + "-".join(f"{a:.2f}" for a in alphas)
                             .replace(".", "p") + "_short")
    # Vectors the user listed are a choice between them; without the parents' layer count, one line.
    listed = study_space(grid, given={"layer_alphas": ((0.2, 0.5, 0.8), (0.5, 0.5, 0.5))}, ranges={},
                         controls=False, layers=3)
    picked = suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask(), listed)
    assert picked["params"]["layer_alphas"] in ((0.2, 0.5, 0.8), (0.5, 0.5, 0.5))
    with pytest.raises(SpaceError, match="one value per layer of the parents, whose layers are not known here"):
        study_space(grid, given={}, ranges={}, controls=False)
