"""Crypto-shredding and the version-2 events, as pure code: sealing, key wrapping, the
upcaster from version 1, opening and redaction, and the erasure in the domain."""

import logging
from datetime import date
from uuid import UUID, uuid4

import pytest

from warriors.domain import commands
from warriors.domain.errors import WarriorNotFound
from warriors.domain.events import (
    DomainEvent,
    WarriorCreated,
    WarriorDeleted,
    WarriorErased,
    WarriorUpdated,
    event_from_data,
    plain_data,
)
from warriors.domain.upcasting import UPCASTERS
from warriors.domain.warrior import ErasedWarrior, Warrior, decide, fold
from warriors.eventstore.opening import KeyRecord, Keyring, sealed_data
from warriors.logs import PathOnlyAccessLog
from warriors.security.personal_data import (
    MasterKey,
    PersonalDataError,
    new_data_key,
    new_master_key_text,
    parse_master_key,
    seal,
    unseal,
)

WID = UUID("01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33")
V1_CREATED = {"name": "Musashi", "dob": "1584-03-12", "fight_skills": ["Katana"]}


def master() -> MasterKey:
    return MasterKey(parse_master_key(new_master_key_text()))


def test_sealed_fields_open_only_with_their_key_and_warrior() -> None:
    key = new_data_key()
    sealed = seal(key, WID, {"name": "Musashi"})
    assert "Musashi" not in sealed
    assert unseal(key, WID, sealed) == {"name": "Musashi"}
    with pytest.raises(PersonalDataError):
        unseal(new_data_key(), WID, sealed)
    with pytest.raises(PersonalDataError):  # copied onto another warrior: does not open
        unseal(key, uuid4(), sealed)


def test_a_wrapped_key_names_its_master_key() -> None:
    one, other = master(), master()
    data_key = new_data_key()
    wrapped = one.wrap(WID, data_key)
    assert one.unwrap(WID, wrapped, one.key_id) == data_key
    with pytest.raises(PersonalDataError, match=f"wrapped by master key {one.key_id}"):
        other.unwrap(WID, wrapped, one.key_id)
    assert str(one.secret) not in repr(one)


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ=", "A" * 60])
def test_a_bad_master_key_is_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="master key"):
        parse_master_key(text)


def test_version_1_is_upcast_to_the_grouped_shape() -> None:
    created = UPCASTERS.upcast("WarriorCreated", 1, V1_CREATED)
    assert created == {"personal": {"name": "Musashi", "dob": "1584-03-12"}, "fight_skills": ["Katana"]}
    assert UPCASTERS.upcast("WarriorUpdated", 1, {"fight_skills": []}) == {"fight_skills": []}
    assert event_from_data("WarriorCreated", created) == WarriorCreated(
        "Musashi", date(1584, 3, 12), ("Katana",)
    )
    assert plain_data("WarriorCreated", created) == {**V1_CREATED}


def test_both_versions_open_to_the_same_event() -> None:
    master_key = master()
    data_key = new_data_key()
    keyring = Keyring({WID: KeyRecord(master_key.wrap(WID, data_key), master_key.key_id)}, master_key)
    v2 = sealed_data(data_key, WID, WarriorCreated("Musashi", date(1584, 3, 12), ("Katana",)).to_data())
    assert "Musashi" not in str(v2)
    opened_v2 = keyring.open_data(WID, "WarriorCreated", 2, v2)
    opened_v1 = keyring.open_data(WID, "WarriorCreated", 1, V1_CREATED)
    assert event_from_data("WarriorCreated", opened_v2) == event_from_data("WarriorCreated", opened_v1)


def test_an_erased_warriors_events_of_both_versions_read_as_erasures() -> None:
    keyring = Keyring({WID: KeyRecord(None, None)})  # the redaction record: the key is gone
    sealed = sealed_data(new_data_key(), WID, WarriorUpdated(name="Zé").to_data())
    for event_type, version, data in [
        ("WarriorCreated", 1, V1_CREATED),
        ("WarriorUpdated", 2, sealed),
        ("WarriorUpdated", 1, {"fight_skills": ["Bo"]}),
        ("WarriorDeleted", 1, {}),
    ]:
        opened = keyring.open_data(WID, event_type, version, data)
        assert not {"Musashi", "Zé", "1584-03-12"} & set(str(opened).split("'"))
        assert event_from_data(event_type, opened) == WarriorErased()
        assert plain_data(event_type, opened)["personal_data"] == "erased"


def test_a_sealed_event_without_its_key_is_an_error_not_an_erasure() -> None:
    sealed = sealed_data(new_data_key(), WID, WarriorUpdated(name="Zé").to_data())
    with pytest.raises(PersonalDataError, match="no key"):
        Keyring({}).open_data(WID, "WarriorUpdated", 2, sealed)


def test_erasing_a_living_or_deleted_warrior_and_nothing_after() -> None:
    created = WarriorCreated("Musashi", date(1584, 3, 12), ())
    histories: list[list[DomainEvent]] = [[created], [created, WarriorDeleted()]]
    for history in histories:
        state = fold(None, WID, history)
        assert decide(state, commands.EraseWarrior(WID)) == [WarriorErased()]
        erased = fold(state, WID, [WarriorErased()])
        assert erased == ErasedWarrior(WID, len(history) + 1)
        for command in (
            commands.EraseWarrior(WID),
            commands.DeleteWarrior(WID),
            commands.ChangeWarrior(WID, "X"),
        ):
            with pytest.raises(WarriorNotFound):
                decide(erased, command)
    with pytest.raises(WarriorNotFound):
        decide(None, commands.EraseWarrior(WID))


def test_a_replay_of_an_erased_warrior_folds_to_erased() -> None:
    # Each event of an erased warrior reads as an erasure: the fold never holds its data.
    state = fold(None, WID, [WarriorErased(), WarriorErased(), WarriorErased()])
    assert state == ErasedWarrior(WID, 3)
    assert not isinstance(state, Warrior)


def test_the_access_log_keeps_no_search_term() -> None:
    args = ("127.0.0.1:5000", "GET", "/api/v1/queries/warriors?term=Musashi", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert PathOnlyAccessLog().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /api/v1/queries/warriors?… HTTP/1.1" 200'
