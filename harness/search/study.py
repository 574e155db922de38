"""An Optuna study of the search space: its storage, its sampler, and every trial's life (asked, told, confirmed).

Only one process asks and tells: the session's controller. A trial is one child; its record (the same
:class:`harness.search.result.ChildResult` dict the run directory journals) is kept on the trial as a user
attribute, so any session, on any machine, rebuilds the whole study's leaderboard from the storage alone.

Storage: a path is an Optuna journal file (``JournalStorage`` on a ``JournalFileBackend``): it needs no server,
every write is one appended line under a file lock, so a second session on the same machine (or a dashboard
reading it) never sees a half-written study, and Ctrl-C between two writes loses nothing written. A URL
(``postgresql://…``, ``sqlite:///…``) is Optuna's RDB storage, for several machines on one study; ``postgresql://``
means psycopg 3. A trial whose session died is failed at the next session: at once when the session ran on this
host (its process is gone), after the heartbeat's grace period when it ran elsewhere (RDB storages only).

optuna is imported lazily: the library is importable without it (the ``study`` extra installs it).
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.core.atomic import pid_alive
from harness.core.errors import HarnessError
from harness.core.registry import check_name

SAMPLERS = ("tpe", "cmaes", "nsga2", "random")
OBJECTIVES = ("primary", "return")
HEARTBEAT_S = 30  # an RDB storage's heartbeat: a trial silent for GRACE_S is failed by the next session
GRACE_S = 120
OPEN_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10
RECORD = "record"  # the trial's user attribute holding its child record
CONFIRMS = "confirms"  # on a confirmation trial: the number of the trial it re-runs with another seed
INSTALL = "install the study extra: pip install 'pytest-crossover[study]'"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise HarnessError(f"a study needs optuna; {INSTALL}", field="search") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna's notes that do not concern a user: heartbeats and fail_stale_trials are marked experimental, and a
    heartbeat outside Study.optimize is what this module does on purpose (ask and tell on the controller)."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def ask(study: Any) -> Any:
    with quiet():
        return study.ask()


def is_url(where: str) -> bool:
    return "://" in where


def storage_url(url: str) -> str:
    """SQLAlchemy's ``postgresql://`` means psycopg2; the study extra installs psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def redacted(where: str) -> str:
    """A storage as outputs may show it: a URL without its password."""
    if not is_url(where) or "@" not in where:
        return where
    scheme, _, rest = where.partition("://")
    cred, _, host = rest.rpartition("@")
    return f"{scheme}://{cred.split(':', 1)[0]}@{host}"


def open_storage(where: str) -> Any:
    """The storage a path or URL names (see the module docstring); a one-line error when it cannot be opened."""
    optuna = _optuna()
    for attempt in range(OPEN_ATTEMPTS):
        try:
            if is_url(where):
                with quiet():
                    url = storage_url(where)
                    engine: dict[str, Any] = {"pool_pre_ping": True}
                    if url.startswith("postgresql"):  # an unreachable server: one line after 10 s, not a hang
                        engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
                    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                      engine_kwargs=engine)
            from optuna.storages.journal import JournalFileBackend

            os.makedirs(os.path.dirname(os.path.abspath(where)), exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(where))
        except Exception as exc:  # sqlalchemy's, psycopg's and the file system's errors alike: one line
            # Sessions starting at once on a new database race to create its tables: the loser tries again.
            if is_url(where) and attempt + 1 < OPEN_ATTEMPTS and "IntegrityError" in type(exc).__name__:
                time.sleep(0.2 * (attempt + 1))
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise HarnessError(f"cannot open the study storage {redacted(where)!r}: {type(exc).__name__}: {first}",
                               field="study") from None
    raise AssertionError("unreachable")


def session_seed(seed: int, asked_before: int) -> int:
    """The sampler's seed for a session: the user's seed and the trials the study had, so a resumed session draws
    new points (a sampler seeded alike each session would repeat its first random draws)."""
    digest = hashlib.sha256(f"{seed}:{asked_before}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(name: str, seed: int, objectives: int) -> Any:
    """The sampler, with every argument that changes its draws pinned (Optuna's defaults move between releases)."""
    optuna = _optuna()
    check_name("sampler", name, SAMPLERS, field="sampler")
    if name == "tpe":  # multi-objective TPE when two objectives are given; constant liar: batches spread out
        with warnings.catch_warnings():  # group (conditional parameters per operator) is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if name == "cmaes":
        if objectives > 1:
            raise HarnessError("CMA-ES optimises one objective; use tpe or nsga2 with two", field="sampler")
        try:
            import cmaes  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            raise HarnessError(f"cmaes needs the cmaes package; {INSTALL}", field="sampler") from None
        # Categorical choices (operator, regime) fall back to a seeded random sampler.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(storage: Any, name: str, objectives: Sequence[str], sampler: Any) -> Any:
    """The study ``name`` in ``storage``, created on first use; its objectives must be the session's."""
    optuna = _optuna()
    directions = ["maximize"] * len(objectives)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                    load_if_exists=True)
    except Exception as exc:
        raise HarnessError(f"cannot open study {name!r}: {type(exc).__name__}: {exc}", field="study") from None
    held = study.user_attrs.get("objectives")
    if held is None:
        study.set_user_attr("objectives", list(objectives))
    elif list(held) != list(objectives):
        raise HarnessError(f"study {name!r} maximises {','.join(held)}, not {','.join(objectives)}; pass "
                           f"--crossover-objectives {','.join(held)}, or another --crossover-study", field="objectives")
    return study


def fail_unfinished(study: Any, storage: Any, host: str, alive: Callable[[int], bool] = pid_alive) -> list[int]:
    """Fail every trial left running by a session that is gone: on this host, one whose process has exited; on
    another, one whose heartbeat stopped (RDB storages). Returns their numbers. Never counted as complete."""
    optuna = _optuna()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") == host and not alive(int(attrs.get("pid", -1))):
            try:
                storage.set_trial_user_attr(t._trial_id, "status", "lost")
                storage.set_trial_user_attr(t._trial_id, "message", "its session ended before the child finished")
                if storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                    failed.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another session starting at the same time failed it first
    if isinstance(storage, optuna.storages.RDBStorage):
        failed += [t.number for t in _stale(optuna, study)]
    return failed


def _stale(optuna: Any, study: Any) -> list[Any]:
    """Trials whose heartbeat stopped, failed (optuna's own rule: silent for longer than the grace period)."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    with quiet():
        optuna.storages.fail_stale_trials(study)
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)) if t.number in before]


def objective_values(record: Mapping[str, Any], objectives: Sequence[str]) -> list[float] | None:
    """The trial's values, or None when a value is missing or not finite (the trial is then failed)."""
    import math

    out = []
    for name in objectives:
        value = record.get("primary") if name == "primary" else (record.get("return") or {}).get("mean")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        out.append(float(value))
    return out


def told_state(record: Mapping[str, Any], objectives: Sequence[str]) -> tuple[str, list[float] | None]:
    """How a finished child is told: ``complete`` with its values (a degenerate child too: it finished, and its
    low score is what the sampler must learn; its record says degenerate), else ``fail`` (an error, a lost
    worker, a diverged fine-tune, a missing objective)."""
    values = objective_values(record, objectives)
    if record.get("status") in ("error", "lost", "diverged") or values is None:
        return "fail", None
    return "complete", values


def tell(study: Any, trial: Any, record: Mapping[str, Any], objectives: Sequence[str]) -> str:
    """Tell the study a finished (or failed) child; returns the state told."""
    optuna = _optuna()
    state, values = told_state(record, objectives)
    trial.set_user_attr(RECORD, dict(record))
    trial.set_user_attr("status", str(record.get("status")))
    with quiet():
        if state == "complete":
            study.tell(trial, values)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return state


def fail(study: Any, trial: Any, status: str, message: str) -> None:
    """Fail a trial that has no record (it never ran, or its session ended first)."""
    optuna = _optuna()
    trial.set_user_attr("status", status)
    trial.set_user_attr("message", message)
    with quiet():
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def add_confirmation(study: Any, base: Any, record: Mapping[str, Any], objectives: Sequence[str],
                     attrs: Mapping[str, Any]) -> str:
    """A confirmation run (the base trial's choices, another seed), added to the study as a finished trial."""
    optuna = _optuna()
    child_id = record.get("child_id")
    if any((t.user_attrs.get(RECORD) or {}).get("child_id") == child_id for t in study.get_trials(deepcopy=False)):
        return "duplicate"  # another session ran the same confirmation (the same seeds) and told it first
    state, values = told_state(record, objectives)
    user = {**attrs, RECORD: dict(record), "status": str(record.get("status")), CONFIRMS: base.number}
    study.add_trial(optuna.trial.create_trial(
        params=base.params, distributions=base.distributions, values=values, user_attrs=user,
        state=optuna.trial.TrialState.COMPLETE if state == "complete" else optuna.trial.TrialState.FAIL))
    return state


def finished_records(study: Any) -> list[dict[str, Any]]:
    """Every record the study holds (complete trials and failed ones that carry a record), in trial order."""
    return [dict(t.user_attrs[RECORD]) for t in study.get_trials(deepcopy=False) if RECORD in t.user_attrs]


@dataclass(frozen=True)
class Confirmation:
    base: Any  # the FrozenTrial re-run
    replicate: int  # the replicate level (the seed key) of the re-run


def to_confirm(study: Any, top: int, replicates: int) -> list[Confirmation]:
    """The ``top`` best complete trials (by the first objective) that have fewer than ``replicates`` confirmation
    runs, each with the runs it still lacks: the study's best is then a recipe's mean, not its luckiest draw."""
    optuna = _optuna()
    if top <= 0 or replicates <= 0:
        return []
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done: dict[int, int] = {}
    for t in trials:
        if CONFIRMS in t.user_attrs:
            done[int(t.user_attrs[CONFIRMS])] = done.get(int(t.user_attrs[CONFIRMS]), 0) + 1
    # A degenerate child is a complete trial (its low score informs the sampler) but never a recipe to confirm.
    bases = sorted((t for t in trials if CONFIRMS not in t.user_attrs and t.user_attrs.get("status") != "degenerate"),
                   key=lambda t: (-t.values[0], t.number))
    out = []
    for t in bases[:top]:
        out += [Confirmation(t, r) for r in range(done.get(t.number, 0) + 1, replicates + 1)]
    return out


class Heartbeat:
    """Records a heartbeat for each running trial of this session (RDB storages), so another session can tell a
    live trial from one whose session died."""

    def __init__(self, storage: Any, interval: float = HEARTBEAT_S) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, trial_ids: Sequence[int]) -> None:
        optuna = _optuna()
        if not isinstance(self.storage, optuna.storages.RDBStorage) or not trial_ids:
            return
        self.trial_ids = set(trial_ids)
        self._beat()
        self._thread = threading.Thread(target=self._run, name="crossover-study-heartbeat", daemon=True)
        self._thread.start()

    def done(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _beat(self) -> None:
        with self._lock:
            ids = list(self.trial_ids)
        for tid in ids:
            try:
                self.storage.record_heartbeat(tid)
            except Exception:  # a finished trial, a dropped connection: the next beat tries again
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def host() -> str:
    return platform.node() or "unknown"

