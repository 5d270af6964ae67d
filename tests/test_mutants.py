"""``scripts/mutate.py`` keeps working: every mutant still names code that occurs once in its file, and
a small fixed sample of mutants is caught by its tests (the whole list: ``python3 scripts/mutate.py``)."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import mutate  # noqa: E402

SAMPLE = ["no-fsync", "cold-compressed-checksum"]


def test_every_mutant_names_code_that_occurs_once() -> None:
    for m in mutate.MUTANTS:
        with open(os.path.join(ROOT, m.path)) as f:
            assert f.read().count(m.find) == 1, m.id
        assert all(os.path.exists(os.path.join(ROOT, t.split("::")[0])) for t in m.tests), m.id
    assert len({m.id for m in mutate.MUTANTS}) == len(mutate.MUTANTS)


@pytest.mark.parametrize("mutant_id", SAMPLE)
def test_a_sample_of_mutants_is_caught(mutant_id: str) -> None:
    """Caught when applied, and the same tests pass on the unmutated copy (so "caught" means the
    mutation, not a copy that cannot run)."""
    (m,) = [m for m in mutate.MUTANTS if m.id == mutant_id]
    assert mutate.run_mutant(m, apply=False)[0] == "MISSED"
    result, _took = mutate.run_mutant(m)
    assert result.startswith("caught"), result
