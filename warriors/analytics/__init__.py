"""Warrior statistics for analytics users: computed per day with pandas, kept in PostgreSQL."""
