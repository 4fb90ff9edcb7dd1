"""The gradient exchange overlapped with the backward pass (`compression.overlap: true`).

As DDP's reducer and Horovod do: a hook on every parameter
(`register_post_accumulate_grad_hook`) notes when its gradient is final; parameters are
grouped into buckets of about DDP's default size (25 MiB of fp32 gradient), and a bucket
whose gradients are all final is compressed (each parameter on its own, its error feedback
its own: exactly the layerwise exchange's payloads) and its collective started, while
autograd goes on with the layers below. `finish()` (before the optimizer step) starts what
is left, waits for every bucket in order and writes the averages straight into
`param.grad`.

Same result as the exchange after backward (`GradientExchange.exchange_`), bit for bit:
the same payloads (same compressor, tensor id, step and densities per parameter), the same
residuals, the same bytes; the all-gather's scatter-add runs per parameter in rank order,
as there; an all-reduce sums each coordinate of W = 2 workers in the one order a sum of two
has. (With W > 2 a ring all-reduce's order of additions may depend on where a coordinate
sits in its buffer, which bucketing changes: averages stay identical on every worker, but
may differ from the exchange after backward in the last bit.)

Every worker must start the same collectives in the same order, whatever order autograd
finishes gradients in: buckets start strictly in their fixed order (bucket i only after
buckets 0..i-1, as DDP's reducer), and a parameter that got no gradient this step sends
zeros from `finish()`, as the exchange after backward does (so it holds its bucket and
those after it back until then: DDP's find_unused_parameters problem, without the error).

What it covers: layerwise scope (one bucket per parameter to compress): dense steps
(method none, warm-up), top-k / random-k, and PowerSGD as far as its two all-reduces allow:
each bucket's first all-reduce (its P factors with its dense tensors) starts during
backward; the second (the Q factors) needs the first's summed P, so `finish()` starts
every bucket's second once its first is done, then waits for them in order. Not global
scope, whose one top-k needs every gradient: `unsupported_reason` says so, and the worker
keeps the exchange after backward there, and under fp16 (trainers/loss_scaler.py: a member
that overflows anywhere, on any worker, must send zeros everywhere, known only after the
whole backward).

Shape legend: P members, N coordinates per member of one parameter.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from compression import ByteReport, Collective, CompressionConfig, byte_report
from compression.error_feedback import accumulation_dtype

from .exchange import GradientExchange, InFlight, StepPlan
from .powersgd_exchange import Round

# DDP's default bucket_cap_mb: fewer, larger collectives than one per parameter (latency),
# yet the first ones start while most of the backward pass is still to run.
BUCKET_BYTES = 25 * 1024 * 1024


def unsupported_reason(config: CompressionConfig) -> str | None:
    """Why `config` cannot overlap its exchange with the backward pass, or None."""
    if config.scope == "global":
        return "scope global selects one top-k over every gradient, so nothing can be sent before the last one"
    return None


def bucket_names(named_params: Sequence[tuple[str, torch.Tensor]], bucket_bytes: int = BUCKET_BYTES) -> list[list[str]]:
    """The buckets of `named_params` (in registration order, member axis first): reverse
    registration order, as DDP (roughly the order backward finishes them), a new bucket once
    the next parameter would overflow `bucket_bytes`. Parameters with no coordinates per
    member send nothing (as in GradLayout) and join no bucket."""
    buckets: list[list[str]] = []
    size = bucket_bytes
    for name, param in reversed(named_params):
        if param[0].numel() == 0:
            continue
        nbytes = param.numel() * param.element_size()
        if size + nbytes > bucket_bytes and size > 0:
            buckets.append([])
            size = 0
        buckets[-1].append(name)
        size += nbytes
    return buckets


class OverlappedExchange:
    """The layerwise exchange of `exchange`, started bucket by bucket during backward.

    Per step, on the micro-step that ends gradient accumulation:

        overlapped.arm(step=step, density_P=densities)   # before backward
        engine.backward(loss)                             # hooks start the buckets
        report = overlapped.finish()                      # averages in param.grad

    Without `arm` the hooks do nothing (the other micro-steps accumulate locally).
    """

    def __init__(self, exchange: GradientExchange, named_params: Iterable[tuple[str, torch.nn.Parameter]],
                 *, bucket_bytes: int = BUCKET_BYTES) -> None:
        reason = unsupported_reason(exchange.config)
        if reason is not None:
            raise ValueError(f"the exchange cannot overlap the backward pass: {reason}")
        self.exchange = exchange
        params = [(n, p) for n, p in named_params if p.requires_grad]
        self.params = dict(params)
        self.buckets = bucket_names(params, bucket_bytes)
        self._bucket_of = {name: i for i, names in enumerate(self.buckets) for name in names}
        self._hooks = [param.register_post_accumulate_grad_hook(self._on_ready(name)) for name, param in params]
        self._plan: StepPlan | None = None  # set by arm(), cleared by finish()
        self._missing: list[int] = []  # per bucket: gradients still to come this step
        self._in_flight: list[InFlight | Round] = []  # started buckets, in order

    def arm(self, *, step: int, density_P: Sequence[float] | None = None) -> None:
        """The next backward ends gradient accumulation: exchange its gradients as they come."""
        self._plan = self.exchange.plan(step, density_P)
        self._missing = [len(names) for names in self.buckets]
        self._in_flight = []
        self.exchange.last_payloads = {}

    def finish(self) -> ByteReport:
        """Start the buckets still waiting (zeros for a parameter without a gradient), wait
        for all of them in order and write the averages into `param.grad`."""
        if self._plan is None:
            raise RuntimeError("finish() without arm(): nothing was exchanged")
        for param in self.params.values():  # as the exchange after backward: the optimizer sees zeros
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        self._missing = [0] * len(self.buckets)
        self._start_ready_buckets()
        for in_flight in self._in_flight:  # PowerSGD: every second all-reduce started before any wait
            self.exchange.advance(in_flight)
        for names, in_flight in zip(self.buckets, self._in_flight):
            targets = {name: self._target(name) for name in names}
            self.exchange.finish_into(in_flight, targets)
            for name, average_PN in targets.items():
                grad = self.params[name].grad
                if average_PN.data_ptr() != grad.data_ptr():  # averaged beside it: copy in
                    grad.copy_(average_PN.view(grad.shape))
        plan, self._plan = self._plan, None
        members = next(iter(self.params.values())).shape[0]
        if plan.collective is Collective.TWO_ALL_REDUCES:
            return self.exchange.powersgd.report(self._in_flight, members=members)
        return byte_report(self.exchange.last_payloads.values(), members=members, dense_step=plan.dense)

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for hook in self._hooks:
            hook.remove()

    # -- during backward ----------------------------------------------------------------

    def _on_ready(self, name: str):
        def hook(param: torch.Tensor) -> None:
            if self._plan is None or name not in self._bucket_of:
                return
            self._missing[self._bucket_of[name]] -= 1
            self._start_ready_buckets()
        return hook

    @torch.no_grad()
    def _start_ready_buckets(self) -> None:
        """Start buckets in their fixed order, as far as their gradients are all final."""
        while len(self._in_flight) < len(self.buckets) and self._missing[len(self._in_flight)] == 0:
            names = self.buckets[len(self._in_flight)]
            self._in_flight.append(self.exchange.start_layerwise(
                self._plan, {name: self._grad_PN(name) for name in names},
                {name: tuple(self.params[name].shape[1:]) for name in names}))

    def _grad_PN(self, name: str) -> torch.Tensor:
        grad = self.params[name].grad
        return grad.reshape(grad.shape[0], -1)

    def _target(self, name: str) -> torch.Tensor:
        """`param.grad` as `[P, N]` (its payload is already packed, so the average may
        overwrite it), or a new tensor when the gradient is strided or narrower than fp32."""
        grad = self.params[name].grad
        if grad.is_contiguous() and accumulation_dtype(grad.dtype) == grad.dtype:
            return grad.view(grad.shape[0], -1)
        return torch.empty((grad.shape[0], grad[0].numel()), dtype=accumulation_dtype(grad.dtype), device=grad.device)
