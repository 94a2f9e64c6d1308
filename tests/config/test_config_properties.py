"""Property (issue 30): overrides drawn from the schema's fields and hostile boundary values (NaN,
inf, negative, huge, empty, unicode, `..`, lists of the wrong length, unbalanced YAML) either give a
run that would start (`train --dry-run` exits 0) or exit 2 with one line; never a traceback,
nothing written, no Ray started."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganflow.config.schema import JobConfig
from tests.conftest import JOBS, cli_here


def leaves(cls, prefix: str = "") -> typing.List[typing.Tuple[str, typing.Any]]:
    """(dotted key, type) of every field of the schema, nested sections walked."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += leaves(kind, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", kind))
    return out


FIELDS = leaves(JobConfig)
NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e23", str(2**63), "0.5", "3", "ten", "''"]
TEXT = ["''", "..", "../x", "/abs", "a b", "ü-ñ", "x" * 300, "s3:/b/x", "s3://b", "null", "'${oc.env:NOPE_NOT_SET}'",
        "'[1,2'", "a\\b"]
LISTS = ["[]", "[1]", "[1,2,3]", "[nan,1]", "[a,..]", "[[1]]"]


def values_for(kind) -> typing.List[str]:
    text = str(kind)
    if "List" in text or "list" in text or "Tuple" in text:
        return LISTS + NUMBERS[:3]
    if "Dict" in text:
        return ["{}", "{CPU: nan}", "{a: 1}", "[]"]
    if "bool" in text:
        return ["true", "maybe", "2"]
    if "int" in text or "float" in text:
        return NUMBERS
    return TEXT + NUMBERS[:2]


override = st.sampled_from(FIELDS).flatmap(lambda f: st.sampled_from(values_for(f[1])).map(lambda v: f"{f[0]}={v}"))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("never-written")


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(job=st.sampled_from(["quickstart.yaml", "ring.yaml"]), overrides=st.lists(override, min_size=1, max_size=3))
def test_any_hostile_override_starts_a_run_or_is_one_line_exit_2_with_nothing_written(job, overrides, storage):
    import ray

    started_before = ray.is_initialized()  # another test's in-process Ray, or none
    proc = cli_here("train", str(JOBS / job), *overrides, f"storage.uri={storage}", "--dry-run")
    assert proc.returncode in (0, 2), (overrides, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, (overrides, proc.stderr[-2000:])
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ganflow: error: "), (overrides, proc.stderr)
    assert not any(storage.iterdir()), overrides
    assert ray.is_initialized() == started_before, "the command started Ray"
