"""cluster.yaml and cluster-local.yaml pass the validation `ray up` applies; a misspelt key fails it."""
from __future__ import annotations

import copy
import os

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str) -> dict:
    with open(os.path.join(REPO, name), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before its provider runs
    validate_config(prepared)
    return prepared


def test_gpu_cluster_config_is_valid_and_installs_the_project():
    config = _validate(_load("cluster.yaml"))
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers.values())
    assert config["available_node_types"][config["head_node_type"]]["resources"]["GPU"] == 0
    assert any("hybench[gpu]" in command for command in config["setup_commands"])
    assert "~/hybench" in config["file_mounts"]


def test_on_prem_config_is_valid():
    config = _validate(_load("cluster-local.yaml"))
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    assert any("hybench[gpu]" in command for command in config["setup_commands"])


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_unknown_key_fails_validation(name):
    config = _load(name)
    config["setup_comands"] = ["true"]
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        _validate(config)


def test_unknown_key_in_a_node_type_fails_validation():
    config = _load("cluster.yaml")
    config["available_node_types"]["gpu_1x_a10g"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        _validate(config)
