"""Pure domain code: values, commands, events and the Warrior aggregate. No I/O here."""
