"""Bounded fuzzing: a few hundred byte mutations of a small clip through the pipeline.

Each must end in a decodable output or a CamVideoError (one line for the CLI), with no
temporary file left — never another exception. The longer run is benchmarks/fuzz.py.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

_spec = importlib.util.spec_from_file_location(
    "camvideo_fuzz", Path(__file__).parent.parent / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, fuzz.seed_clip(folder), fuzz.tiny_model()


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_mutated_clips_never_crash(setup, seed, rounds):
    folder, data, model = setup
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        data = fuzz.mutate(data, rng)
    outcome = fuzz.run_case(data, folder, model)
    assert outcome == "ok" or outcome.startswith("refused: ")


def test_unmutated_seed_is_ok(setup):
    folder, data, model = setup
    assert fuzz.run_case(data, folder, model) == "ok"
