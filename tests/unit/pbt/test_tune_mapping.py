"""population.backend: tune: the spec's pbt section as Ray Tune's PopulationBasedTraining
arguments, the trials' search space, and the spec rules of the backend."""
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search.sample import Float
from ray.tune.search.variant_generator import generate_variants

from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree
from launch.backends.tune import check_synch_fits, checkpoints_to_keep
from pbt.config import PBTConfig
from pbt.ray.private_api import EventLoggingPBT
from pbt.ray.tune_scheduler import build_scheduler, param_space, scheduler_kwargs, tune_domain
from pbt.tune_mapping import clip_to_ranges

PBT = {"perturbation_interval": 50, "burn_in": 100, "quantile_fraction": 0.5, "resample_probability": 0.1,
       "perturbation_factors": [1.5, 0.5], "metric": "loss", "mode": "max", "synch": True,
       "hyperparam_mutations": {"lr": {"loguniform": [1e-4, 1e-2]}, "weight_decay": {"uniform": [0.0, 0.1]},
                                "dropout": [0.0, 0.1, 0.2]}}


def test_every_pbt_key_maps_to_its_ray_argument():
    kwargs = scheduler_kwargs(PBTConfig.model_validate(PBT))
    assert {k: v for k, v in kwargs.items() if k not in ("hyperparam_mutations", "custom_explore_fn")} == {
        "time_attr": "step", "metric": "loss", "mode": "max", "perturbation_interval": 50, "burn_in_period": 100,
        "quantile_fraction": 0.5, "resample_probability": 0.1, "perturbation_factors": (1.5, 0.5), "synch": True}
    assert set(kwargs["hyperparam_mutations"]) == {"lr", "weight_decay", "dropout"}
    assert isinstance(PopulationBasedTraining(**kwargs), PopulationBasedTraining)  # Ray accepts them all


def test_synch_defaults_to_ray_tunes_asynchronous_pbt():
    pbt = PBTConfig.model_validate({"hyperparam_mutations": {"lr": [1e-3, 1e-2]}})
    assert scheduler_kwargs(pbt)["synch"] is False


def test_ranges_become_tune_domains_and_choices_stay_lists():
    mutations = PBTConfig.model_validate(PBT).hyperparam_mutations
    lr, wd = tune_domain(mutations["lr"]), tune_domain(mutations["weight_decay"])
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert type(lr.get_sampler()).__name__ == "_LogUniform"
    assert isinstance(wd, Float) and (wd.lower, wd.upper) == (0.0, 0.1)
    assert type(wd.get_sampler()).__name__ == "_Uniform"
    # A list is Ray's categorical form (explore shifts to a neighbour); tune.choice would be multiplied.
    assert tune_domain(mutations["dropout"]) == [0.0, 0.1, 0.2]


def test_explore_clips_perturbed_ranges_and_leaves_choices():
    mutations = PBTConfig.model_validate(PBT).hyperparam_mutations
    config = clip_to_ranges({"member": 2, "lr": 0.012, "weight_decay": -0.01, "dropout": 0.1}, mutations)
    assert config == {"member": 2, "lr": 1e-2, "weight_decay": 0.0, "dropout": 0.1}
    kwargs = scheduler_kwargs(PBTConfig.model_validate(PBT))
    assert kwargs["custom_explore_fn"]({"lr": 1.0, "weight_decay": 0.05, "dropout": 0.2})["lr"] == 1e-2


def test_each_trial_is_one_member_with_its_initial_values():
    initial = {"lr": [1e-3, 2e-3, 3e-3], "dropout": [0.0, 0.1, 0.0]}
    configs = [config for _, config in generate_variants(param_space(initial))]
    assert configs == [{"member": m, "lr": initial["lr"][m], "dropout": initial["dropout"][m]} for m in range(3)]


def test_exploit_keeps_the_targets_member_index_and_reports_the_event():
    scheduler = build_scheduler(PBTConfig.model_validate(PBT), on_event=lambda event: None)
    assert isinstance(scheduler, EventLoggingPBT)
    target = Trial("member_trial", config={"member": 3, "lr": 1e-3, "weight_decay": 0.05, "dropout": 0.1}, stub=True)
    donor = Trial("member_trial", config={"member": 0, "lr": 5e-3, "weight_decay": 0.02, "dropout": 0.2}, stub=True)
    new_config, operations = scheduler._get_new_config(target, donor)
    assert new_config["member"] == 3 and set(operations) == {"lr", "weight_decay", "dropout"}
    assert 1e-4 <= new_config["lr"] <= 1e-2 and 0.0 <= new_config["weight_decay"] <= 0.1


def test_checkpoints_outlive_the_wait_of_a_cloning_trial():
    spec = validate_tree({"population": {"backend": "tune", "size": 8, "pbt": PBT}})
    assert checkpoints_to_keep(spec, concurrent=2) == 6  # ceil(8 / 2) + 2
    assert checkpoints_to_keep(spec, concurrent=8) == 3


def test_synch_is_refused_when_not_every_trial_can_run_at_once():
    spec = validate_tree({"population": {"backend": "tune", "size": 4, "pbt": PBT}})
    check_synch_fits(spec, concurrent=4)
    with pytest.raises(SpecError) as caught:
        check_synch_fits(spec, concurrent=2)
    assert caught.value.problems[0].path == "population.pbt.synch"
    assert "use synch: false" in caught.value.problems[0].message


def tune_spec(**population) -> dict:
    return {"population": {"backend": "tune", "size": 4, **population}}


def problems(tree: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        validate_tree(tree)
    return {p.path: p.message for p in caught.value.problems}


@pytest.mark.parametrize("tree, path, hint", [
    (tune_spec(), "population.pbt", "add population.pbt"),
    ({"population": {"backend": "tune", "size": 1}}, "population.size", "raise population.size"),
    ({"population": {"size": 4, "pbt": {**PBT, "synch": True}}}, "population.pbt.synch",
     "set population.backend: tune"),
    (tune_spec(pbt={**PBT, "synch": False, "hyperparam_mutations": {"density": [0.01, 0.1]}}),
     "population.pbt.hyperparam_mutations.density", "set compression.density"),
    (tune_spec(pbt={**PBT, "bytes_penalty": 0.1}), "population.pbt.bytes_penalty", "remove bytes_penalty"),
    ({**tune_spec(pbt=PBT), "distributed": {"launcher": "mpi", "backend": "mpi"}}, "distributed.launcher",
     "launcher: ray"),
])
def test_unsupported_settings_name_the_key_and_the_fix(tree, path, hint):
    found = problems(tree)
    assert path in found and hint in found[path], found


def test_a_tune_population_validates():
    spec = validate_tree(tune_spec(pbt=PBT))
    assert (spec.population.backend, spec.population.pbt.synch) == ("tune", True)
