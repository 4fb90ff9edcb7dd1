"""DeepSpeed on CPU starts without JIT-building its shared-memory all-reduce op
(distrib.deepspeed_glue.skip_shared_memory_op), checked against the installed DeepSpeed."""
import os
import subprocess
import sys

CHECK = """
from deepspeed.accelerator import get_accelerator
from deepspeed.ops.op_builder.builder import probe_is_compatible
from distrib.deepspeed_glue import SHARED_MEMORY_OP
from trainers.loop import import_deepspeed

deepspeed = import_deepspeed(use_gpu=False)
builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
# The op exists and this machine could build it: the skip is what keeps DeepSpeed from it.
assert builder.NAME == SHARED_MEMORY_OP and probe_is_compatible(builder)
from deepspeed.comm.torch import build_shm_op
assert build_shm_op() is None  # DeepSpeed's own check, the one its torch backend makes at start
print("skipped")
"""


def test_deepspeed_on_cpu_does_not_build_the_shared_memory_op():
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped" in done.stdout and "built successfully" not in done.stdout + done.stderr
