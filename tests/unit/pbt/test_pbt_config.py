"""The `population` section: PBT keys, mutation forms, and messages that say how to fix."""
import pytest
import yaml
from pydantic import ValidationError

from pbt.config import Mutation, PBTConfig, PopulationConfig

YAML = """
size: 8
pbt:
  perturbation_interval: 50
  hyperparam_mutations:
    lr: {loguniform: [1.0e-4, 1.0e-2]}
    weight_decay: {uniform: [0.0, 0.1]}
    warmup: {choice: [0.0, 0.05, 0.1]}
    dropout: [0.0, 0.1, 0.2]
    density: [0.01, 0.1, 1.0]
"""


def population(**pbt) -> PopulationConfig:
    return PopulationConfig(size=4, pbt={"hyperparam_mutations": {"lr": [1e-3]}, **pbt})


def error_text(**pbt) -> str:
    with pytest.raises(ValidationError) as caught:
        population(**pbt)
    return str(caught.value)


def test_yaml_forms_parse_and_dump_back_in_the_same_form():
    config = PopulationConfig.model_validate(yaml.safe_load(YAML))
    pbt = config.pbt
    assert (pbt.perturbation_interval, pbt.quantile_fraction, pbt.resample_probability) == (50, 0.25, 0.25)
    assert (pbt.perturbation_factors, pbt.metric, pbt.mode, pbt.burn_in, pbt.bytes_penalty) == \
        ((1.2, 0.8), "val_loss", "min", 0, 0.0)
    m = pbt.hyperparam_mutations
    assert (m["lr"].kind, m["lr"].values) == ("loguniform", (1e-4, 1e-2))
    assert (m["dropout"].kind, m["warmup"].kind) == ("choice", "choice")
    dumped = yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json")))
    assert dumped["pbt"]["hyperparam_mutations"]["lr"] == {"loguniform": [1e-4, 1e-2]}
    assert PopulationConfig.model_validate(dumped) == config


def test_no_pbt_by_default_and_size_kept():
    assert PopulationConfig() == PopulationConfig(size=1, pbt=None)
    with pytest.raises(ValidationError, match="size >= 2"):
        PopulationConfig(size=1, pbt={"hyperparam_mutations": {"lr": [1e-3]}})


def test_unknown_hyperparameter_lists_valid_names():
    text = error_text(hyperparam_mutations={"lrr": [1e-3], "momentum": [0.9]})
    assert "unknown hyperparameter 'lrr'" in text and "'momentum'" in text
    assert "valid names: lr, weight_decay, warmup, dropout, density" in text


@pytest.mark.parametrize("mutation, message", [
    ({"uniform": [0.3, 0.1]}, "low < high"),
    ({"loguniform": [0.0, 0.1]}, "loguniform needs low > 0"),
    ({"uniform": [0.1]}, r"exactly \[low, high\]"),
    ({"normal": [0, 1]}, r"not a mutation.*write \{loguniform: \[low, high\]\}"),
    ([], "at least one value"),
])
def test_malformed_mutations_say_how_to_fix(mutation, message):
    with pytest.raises(ValidationError, match=message):
        PBTConfig(hyperparam_mutations={"lr": mutation})


@pytest.mark.parametrize("name, mutation, domain", [
    ("warmup", {"uniform": [0.0, 1.0]}, r"in \[0, 1\)"),
    ("dropout", [0.1, 1.5], r"in \[0, 1\)"),
    ("density", {"uniform": [0.0, 0.5]}, r"in \(0, 1\]"),
    ("lr", {"uniform": [-1.0, 1.0]}, "> 0"),
    ("weight_decay", [-0.1, 0.0], ">= 0"),
])
def test_values_outside_a_hyperparameters_domain_are_rejected(name, mutation, domain):
    with pytest.raises(ValidationError, match=f"{name}: every value must be {domain}"):
        PBTConfig(hyperparam_mutations={name: mutation})


def test_scalar_keys_are_checked():
    assert "quantile_fraction must be in (0, 0.5]" in error_text(quantile_fraction=0.6)
    assert "quantile_fraction must be in (0, 0.5]" in error_text(quantile_fraction=0.0)
    assert "non-empty list of positive numbers" in error_text(perturbation_factors=[])
    assert "non-empty list of positive numbers" in error_text(perturbation_factors=[1.2, -0.8])
    assert "'val_loss' or 'loss'" in error_text(metric="accuracy")
    assert "'min' or 'max'" in error_text(mode="best")
    assert "greater than 0" in error_text(perturbation_interval=0)
    assert "greater than or equal to 0" in error_text(bytes_penalty=-1.0)
    assert "hyperparam_mutations" in str(pytest.raises(ValidationError, PBTConfig).value)
    assert "Extra inputs" in error_text(interval=5)


def test_python_form_of_a_mutation_and_frozen():
    assert Mutation(kind="uniform", values=(0.0, 1.0)) == Mutation.model_validate({"uniform": [0, 1]})
    with pytest.raises(ValidationError):
        population().pbt.mode = "max"
