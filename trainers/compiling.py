"""`train.compile: true`: the population model's forward through torch.compile.

`nn.Module.compile()` compiles the module's call in place, so parameter names, state dicts
and the module DeepSpeed wraps stay what they are: checkpoints, exports and PBT's member
copies see the same model, compiled or not. The backward pass is compiled with it
(AOTAutograd). A change the compiled code is specialised on compiles again, once: the
switch from training to evaluation, and a dropout rate leaving or reaching 0 for every
member (MemberDropout.active).

What it needs: inductor writes C++ for a CPU, so a CPU job is refused at validation
without a C++ compiler (`compile_problem`, on the validating machine, which is the workers'
on one machine and under mpiexec). On a GPU it writes Triton kernels, whose launcher Triton
builds with the machine's C compiler: not checked here (untested on a GPU). Kinds with
their own autograd Functions (rpe_fft, ripple) and host-side draws (performer's and lara's
seeded redraws) run with graph breaks around them: they work, compiled in pieces.
"""
import os
import shutil

import torch

# Where inductor looks for its compiler (torch._inductor.cpp_builder), in that order.
CPU_COMPILERS = ("g++", "c++", "clang++")
# torch.compile's backend. Tests set "aot_eager" (the same graph capture and compiled
# backward, without inductor's code generation, which takes minutes on 2 cores).
BACKEND = "inductor"


def compile_model(model: torch.nn.Module) -> None:
    """Compile `model`'s forward (and with it its backward) in place."""
    model.compile(backend=BACKEND)


def compile_problem(*, use_gpu: bool) -> str | None:
    """Why `train.compile: true` cannot work on this machine, or None."""
    if use_gpu or os.environ.get("CXX") or any(shutil.which(name) for name in CPU_COMPILERS):
        return None
    return ("torch.compile's CPU code generator (inductor) needs a C++ compiler, and none was found "
            f"($CXX, or {', '.join(CPU_COMPILERS)} on PATH); install one (e.g. apt-get install g++) or set "
            "train.compile: false")
