"""The GPU path of a spec, checked without a GPU: configs/cluster_gpu.yaml asks Ray for
one GPU per worker, picks NCCL and DeepSpeed's cuda accelerator, and a cluster without
GPUs refuses the job before anything starts."""
import os
import sys
import types
from pathlib import Path

import pytest

from launch.spec.deepspeed_config import build_deepspeed_config
from launch.spec.problems import SpecError
from launch.spec.schema import load_spec

REPO = Path(__file__).resolve().parents[3]
GPU_SPEC = REPO / "configs" / "cluster_gpu.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(GPU_SPEC)


def test_gpu_spec_requests_a_gpu_and_4_cpus_per_worker(spec):
    assert spec.distributed.use_gpu and spec.distributed.num_workers == 8
    assert spec.distributed.worker_resources() == {"CPU": 4.0, "GPU": 1.0}


def test_use_gpu_alone_implies_one_gpu_and_one_cpu_per_worker(spec):
    plain = load_spec(GPU_SPEC, ["distributed.resources_per_worker=null"])
    assert plain.distributed.worker_resources() == {"CPU": 1.0, "GPU": 1.0}
    cpu = load_spec(GPU_SPEC, ["distributed.use_gpu=false", "distributed.resources_per_worker=null"])
    assert cpu.distributed.worker_resources() == {"CPU": 1.0} and cpu.distributed.comm_backend == "gloo"


def test_gpu_spec_uses_nccl_and_deepspeeds_cuda_accelerator(spec, monkeypatch):
    assert spec.distributed.comm_backend == "nccl"  # TorchConfig(backend=...) of the Ray job
    from trainers.loop import import_deepspeed

    # setenv first, so that monkeypatch restores the caller's value (or its absence) afterwards:
    # a "cuda" left behind would make later DeepSpeed processes look for a GPU.
    monkeypatch.setenv("DS_ACCELERATOR", "unset")
    monkeypatch.delenv("DS_ACCELERATOR")
    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace())  # no real import here
    import_deepspeed(spec.distributed.use_gpu)
    assert os.environ["DS_ACCELERATOR"] == "cuda"


def test_gpu_spec_deepspeed_config_and_worker_plan(spec):
    from launch.backends.plan import worker_plan

    ds = build_deepspeed_config(spec)
    # train_batch_size = micro 16 × accum 1 × 8 workers; sparsepop owns the exchange (ZeRO 0),
    # training stays fp32 (no DeepSpeed fp16/bf16 optimizer), clipping is per member.
    assert ds["train_batch_size"] == 16 * 1 * 8
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["gradient_accumulation_steps"] == 1
    assert ds["zero_optimization"] == {"stage": 0} and ds["gradient_clipping"] == 0.0
    assert "fp16" not in ds and "bf16" not in ds
    plan = worker_plan(spec, ds)
    assert plan.use_gpu and plan.backend == "torch" and plan.compression.value_dtype == "fp16"


def test_a_gpu_sweep_trial_reserves_every_workers_gpu(spec):
    from launch.study.sweep import expand_grid

    tree = spec.model_dump(mode="json")
    trial = expand_grid(tree, {"compression.density": [0.01]}).trials[0]
    assert trial.resources() == {"CPU": 32.0, "GPU": 8.0}


def test_check_resources_refuses_a_gpu_job_on_a_cluster_without_gpus(spec):
    """A real local Ray with 2 CPUs and no GPU (the only test here that starts one)."""
    import ray

    from launch.backends.ray_session import check_resources

    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    try:
        with pytest.raises(SpecError) as err:
            check_resources(spec)
        messages = [str(p) for p in err.value.problems]
        assert "distributed.num_workers: 8 workers × 1 GPU = 8 GPU, but the Ray cluster has 0 GPU" in messages[-1]
        assert any("× 4 CPU = 32 CPU, but the Ray cluster has 2 CPU" in m for m in messages)
        # The same job on CPU with 2 workers of 1 CPU fits.
        check_resources(load_spec(GPU_SPEC, ["distributed.use_gpu=false", "distributed.num_workers=2",
                                             "distributed.resources_per_worker=null"]))
    finally:
        ray.shutdown()
