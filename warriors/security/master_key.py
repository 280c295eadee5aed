"""The personal data master key, from the environment (PERSONAL_DATA_KEY) or a file
(PERSONAL_DATA_KEY_FILE). Every service that reads or writes events needs it, and
refuses to start without it (`require_master_key`), rather than failing at the first
warrior it meets."""

from functools import lru_cache

from warriors.config import get_settings
from warriors.security.personal_data import MasterKey, parse_master_key


class MasterKeyMissing(RuntimeError):
    """No usable master key is configured."""


@lru_cache(maxsize=1)
def master_key() -> MasterKey:
    settings = get_settings()
    if settings.personal_data_key is not None and settings.personal_data_key.get_secret_value():
        text, source = settings.personal_data_key.get_secret_value(), "PERSONAL_DATA_KEY"
    elif settings.personal_data_key_file is not None and str(settings.personal_data_key_file) not in (
        "",
        ".",
    ):
        source = f"PERSONAL_DATA_KEY_FILE ({settings.personal_data_key_file})"
        try:
            text = settings.personal_data_key_file.read_text()
        except OSError as exc:
            raise MasterKeyMissing(f"{source} cannot be read: {exc.strerror}") from exc
    else:
        raise MasterKeyMissing(
            "no personal data master key: set PERSONAL_DATA_KEY (32 bytes, base64; `warriors"
            " personal-key new` prints one) or PERSONAL_DATA_KEY_FILE. Warriors' names and dates of"
            " birth are stored encrypted under it (docs/event-store.md, Erasure)."
        )
    try:
        return MasterKey(parse_master_key(text))
    except ValueError as exc:
        raise MasterKeyMissing(f"{source}: {exc}") from exc


def require_master_key() -> MasterKey:
    """At a service's start: the key, or MasterKeyMissing with what to do."""
    return master_key()
