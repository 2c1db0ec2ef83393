from pathlib import Path

import pytest
import yaml

from flowcs.config import apply_overrides, from_dict, load_yaml, to_dict
from flowcs.errors import ConfigError
from flowcs.experiments import build_context, mnist_classify

REPO = Path(__file__).resolve().parents[1]


def test_unknown_and_mistyped_keys_are_rejected():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) flow.stepz"):
        from_dict(mnist_classify.Config, {"flow": {"stepz": 3}})
    with pytest.raises(ConfigError, match="flow.loop.epochs': expected int"):
        from_dict(mnist_classify.Config, {"flow": {"loop": {"epochs": "many"}}})


def test_overrides_parse_yaml_values():
    d = apply_overrides({"flow": {"gate_a": 30.0}}, ["flow.gate_a=10", "eval.rates=[1, 2]"])
    assert d == {"flow": {"gate_a": 10}, "eval": {"rates": [1, 2]}}
    cfg = from_dict(mnist_classify.Config, d)
    assert cfg.flow.gate_a == 10.0 and isinstance(cfg.flow.gate_a, float)
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


@pytest.mark.parametrize("rates", [[0.0], [120.0]])
def test_out_of_range_rates_fail_before_work(rates, tmp_path):
    with pytest.raises(ConfigError, match="out of range"):
        build_context("mnist-classify", overrides=[f"eval.rates={rates}"], run_dir=str(tmp_path), data=str(tmp_path))


def test_config_files_match_code_defaults():
    """configs/*.yaml document the defaults: they must not drift from the code."""
    full = load_yaml(REPO / "configs" / "mnist-classify.yaml")
    assert from_dict(mnist_classify.Config, full) == mnist_classify.Config()
    smoke = yaml.safe_load((REPO / "configs" / "mnist-classify-smoke.yaml").read_text())
    assert smoke == mnist_classify.SMOKE
    assert to_dict(mnist_classify.Config())["flow"]["gate_a"] == 30.0
