"""What the plugin reads outside the resolved options: the arithmetic mode before any conftest is imported (so the
CPU kernels are pinned before anything can run torch), and the ini keys that no option owns."""

from __future__ import annotations

import difflib

import pytest

from pytest_crossover.option_table import Option, option_table


def early_arithmetic(early_config: pytest.Config) -> str | None:
    """The arithmetic mode before the command line is fully parsed (``pytest_load_initial_conftests``), or ``None``
    when no crossover setting is given (the plugin then changes nothing until it collects a child)."""
    ns = early_config.known_args_namespace
    table = option_table()
    given = [o for o in table if getattr(ns, o.dest, None) is not None or _ini_given(early_config, o)]
    if not given:
        return None
    cli = getattr(ns, "crossover_arithmetic", None)
    if cli is not None:
        return str(cli).strip()
    return str(early_config.getini("crossover_arithmetic") or "portable").strip()


def _ini_given(config: pytest.Config, opt: Option) -> bool:
    try:
        value = config.getini(opt.dest)
    except (ValueError, KeyError, pytest.UsageError):  # a bad value: check_ini_keys names it
        return False
    return bool(value) if opt.kind in ("flag", "lines") else value not in ("", None)


def check_ini_keys(config: pytest.Config) -> None:
    """A misspelt ``crossover_*`` key would be ignored, with only pytest's warning (a gate switched off by a typo):
    an error naming it, with the closest crossover key."""
    from pytest_crossover.history import HISTORY_KEYS

    known = tuple(o.dest for o in option_table()) + HISTORY_KEYS
    # pytest's own list of the ini keys no plugin registered (what its "Unknown config option" warning uses).
    unknown: set[str] = getattr(config, "_get_unknown_ini_keys", set)()
    for key in sorted(k for k in unknown if k.lower().startswith("crossover")):
        close = difflib.get_close_matches(key.lower().replace("-", "_"), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise pytest.UsageError(f"{key} (ini): not a pytest-crossover setting{hint}; fix its name, or remove it")
    for key in (*(o.dest for o in option_table() if o.kind == "flag"), "crossover_no_save"):
        try:
            config.getini(key)
        except (ValueError, pytest.UsageError) as exc:  # pytest's own message does not name the key
            raise pytest.UsageError(f"{key} (ini): {exc}; write true or false, or remove it") from None
