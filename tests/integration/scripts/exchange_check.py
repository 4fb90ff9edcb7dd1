"""Reference checks for the exchange integration tests (imported by the test files).

Given the `rank{R}.pt` files that exchange_worker.py wrote, recompute every expected
average from the saved payloads with plain tensor ops and compare:
  dense / values_only: sum of every worker's values, / W, at the (shared) indices
  sparse:              scatter-add of every worker's (values, indices), / W
member by member (a payload holds its rows concatenated, row m of length k_P[m]), and check the rest of the contract: all ranks
got identical results; each member sent exactly its own k per bucket; the per-rank
error-feedback invariant sum(grads) == sum(sent) + residual; warm-up sends exact fp32;
shared random-k indices agree across ranks and change across steps; independent ones
differ across ranks; byte reports match the payloads; a run resumed from the state dict
continues bit-identically; copy_member_ copies residual rows.

Shape legend: P members, N coordinates per member in a bucket, W workers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compression import CompressionConfig, GradLayout, num_selected

# Backends sum half-precision values in their own dtype; we sum in fp32.
SUM_RTOL = {"fp32": 1e-6, "fp16": 2e-3, "bf16": 2e-2}


def load_ranks(outdir: Path, world_size: int) -> list[dict]:
    ranks = [torch.load(outdir / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    assert [d["rank"] for d in ranks] == list(range(world_size))
    assert all(d["world_size"] == world_size for d in ranks)
    return ranks


def _rows(t: torch.Tensor, p: dict) -> list[torch.Tensor]:
    """A sparse payload's values or indices, one tensor per member."""
    return list(t.split(p["k_P"]))


def _decompress(p: dict, dtype=torch.float32) -> torch.Tensor:
    values = p["values"].to(dtype)
    if p["idx"] is None:
        return values.reshape(p["shape"])
    out_PN = torch.zeros(p["shape"], dtype=dtype)
    for m, (idx, v) in enumerate(zip(_rows(p["idx"], p), _rows(values, p))):
        out_PN[m, idx.long()] = v
    return out_PN


def expected_average(payloads_W: list[dict]) -> torch.Tensor:
    """The dense average of one bucket, from every worker's payload."""
    W, first = len(payloads_W), payloads_W[0]
    if first["wire"] in ("dense", "values_only"):
        if first["wire"] == "values_only":
            for p in payloads_W[1:]:
                assert torch.equal(p["idx"], first["idx"]), "shared indices differ across ranks"
        total = sum(p["values"].float() for p in payloads_W)
        return _decompress({**first, "values": total / W})
    out_PN = torch.zeros(first["shape"])
    for p in payloads_W:
        for m, (idx, v) in enumerate(zip(_rows(p["idx"], p), _rows(p["values"], p))):
            out_PN[m].index_add_(0, idx.long(), v.float())
    return out_PN / W


def check_case(case: str, ranks: list[dict]) -> None:
    W = len(ranks)
    config = ranks[0]["cases"][case]["config"]
    scope = config.get("scope", "layerwise")
    rtol = SUM_RTOL[config.get("value_dtype", "fp32")]
    steps_RT = [d["cases"][case]["steps"] for d in ranks]
    case_record = ranks[0]["cases"][case]
    for t, step_recs in enumerate(zip(*steps_RT)):
        where = f"{case} step {t}"
        # 1. identical results on every rank
        for rec in step_recs[1:]:
            for name, g in rec["result"].items():
                assert torch.equal(g, step_recs[0]["result"][name]), f"{where}: ranks differ on {name}"
        # 2. the average, recomputed from the payloads
        layout = GradLayout.from_grads(step_recs[0]["grads"], scope)
        ids = list(step_recs[0]["payloads"])
        expected = layout.unflatten({i: expected_average([r["payloads"][i] for r in step_recs]) for i in ids})
        for name, exp in expected.items():
            got = step_recs[0]["result"][name]
            assert got.shape == exp.shape and got.dtype == exp.dtype, where
            torch.testing.assert_close(got, exp, rtol=rtol, atol=1e-6, msg=f"{where}: {name}")
        # 3. warm-up sends the exact fp32 mean of the gradients
        dense_step = t < config.get("warmup_steps", 0)
        if dense_step or config["method"] == "none":
            assert all(p["wire"] == "dense" for p in step_recs[0]["payloads"].values()), where
        if dense_step:
            for name, got in step_recs[0]["result"].items():
                mean = sum(r["grads"][name] for r in step_recs) / W
                torch.testing.assert_close(got, mean, rtol=1e-6, atol=1e-7)
        # 4. byte report: per member, what its payload rows hold, and for compressed steps
        # k = num_selected(N, the member's density) per bucket, each coordinate a value
        # in its wire dtype plus an int32 index when indices travel
        for rec in step_recs:
            per_member = [sum(p["nbytes_P"][m] for p in rec["payloads"].values()) for m in range(layout.P)]
            assert list(rec["bytes"]["bytes_sent_P"]) == per_member, where
            assert rec["bytes"]["dense_bytes"] == 4 * sum(e.numel_per_member for e in layout.entries)
            for p in rec["payloads"].values():
                coordinate = p["values"].element_size() + (4 if p["on_wire"] else 0)
                assert p["nbytes_P"] == [k * coordinate for k in p["k_P"]], where
                assert sum(p["k_P"]) == p["values"].numel() == (p["idx"].numel() if p["idx"] is not None else
                                                                p["values"].numel()), where
        _check_member_counts(where, case_record, step_recs[0], layout, dense_step or config["method"] == "none")
    _check_indices(case, config, steps_RT)
    for r, d in enumerate(ranks):
        _check_error_feedback(case, config, d["cases"][case], scope, rank=r)


def _check_member_counts(where: str, case_record: dict, rec: dict, layout: GradLayout, dense: bool) -> None:
    """Member m sends num_selected(N, its density) coordinates of every bucket (N when dense)."""
    density_P = case_record["density_P"] or [CompressionConfig(**case_record["config"]).density] * layout.P
    for bucket in layout.buckets:
        expected = [bucket.n] * layout.P if dense else [num_selected(bucket.n, d) for d in density_P]
        assert rec["payloads"][bucket.id]["k_P"] == expected, f"{where}: {bucket.id}"


def _check_indices(case: str, config: dict, steps_RT: list[list[dict]]) -> None:
    if config["method"] != "randomk":
        return
    mode = config.get("randomk_mode", "shared")
    last = len(steps_RT[0]) - 1
    bid = "layer1.weight"
    p00, p01 = steps_RT[0][0]["payloads"][bid], steps_RT[1][0]["payloads"][bid]
    assert p00["on_wire"] == (mode == "independent"), case
    assert not torch.equal(p00["idx"], steps_RT[0][last]["payloads"][bid]["idx"]), f"{case}: same indices every step"
    member_rows = _rows(p00["idx"], p00)
    assert not torch.equal(member_rows[0], member_rows[1]), f"{case}: members share indices"
    if mode == "shared":
        assert torch.equal(p00["idx"], p01["idx"]), f"{case}: shared indices differ across ranks"
    else:
        assert not torch.equal(p00["idx"], p01["idx"]), f"{case}: independent indices agree across ranks"


def _check_error_feedback(case: str, config: dict, rank_case: dict, scope: str, *, rank: int) -> None:
    """sum over steps of the gradients fed == sum of what was sent + the final residual."""
    if not config.get("error_feedback", True):
        assert rank_case["ef_state"] == {}, case
        return
    fed, sent = {}, {}
    for rec in rank_case["steps"]:
        layout = GradLayout.from_grads(rec["grads"], scope)
        for bid, g_PN in layout.flatten(rec["grads"]):
            fed[bid] = fed.get(bid, 0) + g_PN.double()
            sent[bid] = sent.get(bid, 0) + _decompress(rec["payloads"][bid], torch.float64)
    for bid in fed:
        # no entry: the last step was lossless (dense fp32), nothing is held back
        residual = rank_case["ef_state"].get(f"residual.{bid}", torch.zeros_like(fed[bid])).double()
        torch.testing.assert_close(
            sent[bid] + residual, fed[bid], rtol=0, atol=1e-5,
            msg=f"{case} rank {rank}: error-feedback invariant broken for {bid}",
        )


def check_collectives(ranks: list[dict]) -> None:
    W = len(ranks)
    for d in ranks:
        c = d["collectives"]
        assert c["gathered"].shape == (W, 3, 2)
        for w in range(W):
            assert torch.all(c["gathered"][w] == w + 1), "all_gather is not in rank order"
            expected = torch.arange(700_000, dtype=torch.int32) * (w + 1)
            assert torch.equal(c["big_gathered"][w], expected), "a large all_gather lost or reordered pieces"
        assert c["bf16_sum"].dtype == torch.bfloat16
        assert torch.all(c["bf16_sum"].float() == 1.5 * sum(range(1, W + 1)))
        assert c["empty_gather_shape"] == [W, 2, 0]
        assert torch.equal(c["broadcast"], torch.arange(5, dtype=torch.int32) * 2)


def check_all(outdir: Path, world_size: int) -> list[str]:
    ranks = load_ranks(outdir, world_size)
    check_collectives(ranks)
    for d in ranks:
        assert d["state"] == {"resume_equal": True, "copy_member": True}, d["state"]
    cases = list(ranks[0]["cases"])
    for case in cases:
        check_case(case, ranks)
    return cases
