"""The daily statistics computation (pure pandas, no services)."""

from datetime import date

from warriors.analytics.daily import CreatedWarrior, compute_daily_statistics

DAY = date(2026, 3, 1)


def test_counts_skills_and_age_bands() -> None:
    stats = compute_daily_statistics(
        DAY,
        [
            CreatedWarrior("A", date(2000, 3, 1), ("Katana", "Bo")),  # 26 on the day
            CreatedWarrior("B", date(2000, 3, 2), ("Katana",)),  # 25: birthday tomorrow
            CreatedWarrior("C", date(1584, 3, 12), ()),  # 441
            CreatedWarrior("D", date(2026, 3, 1), ("Bo", "Katana", "Judo")),  # 0
        ],
    )
    assert stats.warriors_created == 4
    assert stats.avg_skills == 1.5
    assert stats.skills.to_dict("records") == [
        {"skill": "Katana", "warriors": 3},
        {"skill": "Bo", "warriors": 2},
        {"skill": "Judo", "warriors": 1},
    ]
    assert stats.ages.to_dict("records") == [
        {"age_from": 0, "age_to": 9, "warriors": 1},
        {"age_from": 20, "age_to": 29, "warriors": 2},
        {"age_from": 440, "age_to": 449, "warriors": 1},
    ]


def test_a_day_without_warriors() -> None:
    stats = compute_daily_statistics(DAY, [])
    assert stats.warriors_created == 0
    assert stats.avg_skills is None
    assert stats.skills.empty
    assert stats.ages.empty
