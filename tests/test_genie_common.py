"""The bottom floor's config helpers: what every "unknown field" and "different settings" refusal is built on."""

from dataclasses import dataclass

import pytest

from genie_common.config import check_known_fields, dataclass_from_dict, differing_keys
from genie_common.errors import ConfigError


@dataclass
class Example:
    width: int = 64
    depth: int = 2


def test_unknown_fields_are_refused_by_name_with_the_known_ones():
    assert dataclass_from_dict(Example, {"width": 96}, "example setting") == Example(width=96)
    with pytest.raises(ConfigError, match=r"unknown example setting\(s\) \['widht'\]; known: \['depth', 'width'\]"):
        check_known_fields(Example, {"widht": 96}, "example setting")


def test_differing_keys_names_every_setting_that_changed_came_or_went():
    recorded = {"seed": 1, "episodes": 10, "old": True}
    assert differing_keys(recorded, {"seed": 2, "episodes": 10, "new": 3}) == ["new", "old", "seed"]
    assert differing_keys(recorded, dict(recorded)) == []
    assert differing_keys(recorded, {"seed": 1, "episodes": 20, "old": True}, ignore=("episodes",)) == []
