import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowcs.config import apply_overrides, from_dict, load_yaml, merge, to_dict
from flowcs.errors import ConfigError
from flowcs.experiments import build_context, get_experiment

Config = get_experiment("mnist-classify").config_class

REPO = Path(__file__).resolve().parents[1]


def test_unknown_and_mistyped_keys_are_rejected():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) flow.stepz"):
        from_dict(Config, {"flow": {"stepz": 3}})
    with pytest.raises(ConfigError, match="flow.loop.epochs': expected int"):
        from_dict(Config, {"flow": {"loop": {"epochs": "many"}}})


def test_overrides_parse_yaml_values():
    d = apply_overrides({"flow": {"gate_a": 30.0}}, ["flow.gate_a=10", "eval.rates=[1, 2]"])
    assert d == {"flow": {"gate_a": 10}, "eval": {"rates": [1, 2]}}
    cfg = from_dict(Config, d)
    assert cfg.flow.gate_a == 10.0 and isinstance(cfg.flow.gate_a, float)
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


@pytest.mark.parametrize("rates", [[0.0], [120.0]])
def test_out_of_range_rates_fail_before_work(rates, tmp_path):
    with pytest.raises(ConfigError, match="out of range"):
        build_context("mnist-classify", overrides=[f"eval.rates={rates}"], run_dir=str(tmp_path), data=str(tmp_path))


def test_config_files_are_generated_from_the_code():
    """configs/*.yaml document the defaults and smoke presets: scripts/gen_configs.py writes them from the code."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_configs.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("mnist-classify", "mnist-recon", "faces-recon", "mri-4x", "mri-8x"):
        exp = get_experiment(name)
        assert from_dict(exp.config_class, load_yaml(REPO / "configs" / f"{name}.yaml")) == exp.default_config()
        smoke = from_dict(exp.config_class, load_yaml(REPO / "configs" / f"{name}-smoke.yaml"))
        assert to_dict(smoke) == merge(to_dict(exp.default_config()), exp.smoke)
    assert to_dict(Config())["flow"]["gate_a"] == 30.0


def test_config_command_prints_the_effective_configuration(capsys, tmp_path):
    from flowcs.cli import main

    assert main(["config", "mnist-classify", "--smoke", "--set", "flow.gate_a=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["flow"]["gate_a"] == 7 and cfg["data"]["train_subset"] == 2048
    assert cfg["compare"]["test_subset"] == 128  # the comparison's smoke settings live in the same preset
