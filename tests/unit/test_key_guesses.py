"""The budget of unknown-key look-ups per client address (api/common/key_guesses.py)."""

import pytest

from api.common.key_guesses import GuessBudget, TooManyUnknownKeys


def test_a_client_spends_its_budget_and_it_refills_over_a_minute() -> None:
    budget = GuessBudget(per_minute=6)  # one back every 10 s
    for _ in range(6):
        budget.check("10.0.0.1", 0.0)
        budget.spend("10.0.0.1", 0.0)
    with pytest.raises(TooManyUnknownKeys) as refused:
        budget.check("10.0.0.1", 0.0)
    assert refused.value.retry_after == 10
    budget.check("10.0.0.2", 0.0)  # another address is not affected
    with pytest.raises(TooManyUnknownKeys) as refused:
        budget.check("10.0.0.1", 7.5)
    assert refused.value.retry_after == 3  # rounded up: never "retry after 0 s"
    budget.check("10.0.0.1", 10.0)  # one look-up back
    budget.spend("10.0.0.1", 10.0)
    with pytest.raises(TooManyUnknownKeys):
        budget.check("10.0.0.1", 10.0)
    budget.check("10.0.0.1", 70.0)  # a full budget never grows past its size
    for _ in range(6):
        budget.spend("10.0.0.1", 1000.0)
    with pytest.raises(TooManyUnknownKeys):
        budget.check("10.0.0.1", 1000.0)


def test_at_most_so_many_addresses_are_remembered() -> None:
    budget = GuessBudget(per_minute=1, clients=3)
    for address in ("a", "b", "c", "d"):
        budget.spend(address, 0.0)
    budget.check("a", 0.0)  # the least recently used one was forgotten: a full budget again
    for address in ("b", "c", "d"):
        with pytest.raises(TooManyUnknownKeys):
            budget.check(address, 0.0)
