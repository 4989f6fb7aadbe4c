"""The profiles: exact pins, written down once, documented in the README as they are."""
from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement

from runtime.envs import PROFILES, get_profile
from runtime.envs.profiles import WORKER_REQUIREMENTS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_pin_is_exact_and_the_worker_needs_are_in_every_profile():
    for profile in PROFILES.values():
        names = []
        for line in profile.requirements:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            names.append(req.name)
        assert len(names) == len(set(names)), profile.name
        assert set(WORKER_REQUIREMENTS) <= set(profile.requirements)


def test_python_profile_is_the_pandas1_image():
    pins = dict(r.split("==") for r in get_profile("python").requirements)
    assert pins["pandas"].startswith("1.") and pins["numpy"].startswith("1.")
    assert {"scikit-learn", "pyarrow"} <= set(pins)


def test_readme_lists_each_profile_with_its_pins():
    text = README.read_text()
    section = text[text.index("### Recipe environments"):]
    section = section[:section.index("\n### ", 5)]
    for profile in PROFILES.values():
        row = next((line for line in section.splitlines()
                    if re.match(rf"\s*\|\s*`{profile.name}`", line)), None)
        assert row is not None, f"README has no row for profile {profile.name}"
        assert sorted(re.findall(r"[\w.-]+==[\w.]+", row)) == sorted(profile.requirements)


def test_readme_lists_each_platform_library_and_what_provides_it():
    from runtime.envs import PLATFORM_LIBRARIES

    text = README.read_text()
    section = text[text.index("### Recipe environments"):]
    section = section[:section.index("\n### ", 5)]
    rows = {m.group(1): line for line in section.splitlines()
            if (m := re.match(r"\|\s*`([\w.-]+)`.*\|\s*`runtime/compat/", line))}
    assert set(rows) == set(PLATFORM_LIBRARIES)
    for name, packages in PLATFORM_LIBRARIES.items():
        assert re.findall(r"`runtime/compat/(\w+)`", rows[name]) == list(packages)
