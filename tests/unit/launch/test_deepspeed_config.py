"""The DeepSpeed config is a pure function of the spec."""
from launch.spec.deepspeed_config import build_deepspeed_config
from launch.spec.schema import validate_tree


def test_batch_rule_and_owned_keys():
    spec = validate_tree({"train": {"micro_batch_size": 8, "grad_accum_steps": 3, "grad_clip": 0.5},
                          "distributed": {"num_workers": 2}})
    config = build_deepspeed_config(spec)
    assert config["train_batch_size"] == 8 * 3 * 2
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 3
    assert config["gradient_clipping"] == 0.0  # train.grad_clip is applied per member by the worker
    assert config["zero_optimization"] == {"stage": 0}


def test_passthrough_is_deep_merged_and_pure():
    tree = {"distributed": {"num_workers": 1, "deepspeed": {
        "zero_optimization": {"stage": 0, "reduce_bucket_size": 1000}, "train_batch_size": 8,
        "comms_logger": {"enabled": True}}}}
    spec = validate_tree(tree)
    config = build_deepspeed_config(spec)
    assert config["zero_optimization"] == {"stage": 0, "reduce_bucket_size": 1000}
    assert config["comms_logger"] == {"enabled": True} and config["train_batch_size"] == 8
    config["zero_optimization"]["stage"] = 99  # the caller's copy, not the spec's
    assert build_deepspeed_config(spec) == build_deepspeed_config(spec)
    assert spec.distributed.deepspeed["zero_optimization"]["stage"] == 0
