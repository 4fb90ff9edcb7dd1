"""summary.json: the figures a person looks at first, computed from the metric rows.
A loss that went non-finite is written as null (launch/runs/files.py: to_json)."""
import math


def summarize(rows: list[dict], info: dict, *, wall_time_s: float, status: str) -> dict:
    members = sorted({row["member"] for row in rows})
    per_member = {}
    for member in members:
        mine = [row for row in rows if row["member"] == member]
        val = [row for row in mine if "val_loss" in row]
        per_member[member] = {
            "final_val_loss": val[-1]["val_loss"] if val else None,
            "best_val_loss": min((row["val_loss"] for row in val if math.isfinite(row["val_loss"])), default=None),
            "final_loss": mine[-1]["loss"],
            "final_val_accuracy": val[-1].get("val_accuracy") if val else None,
            "hyperparams": mine[-1].get("hyperparams"),
            # What this member's slot sent and would have sent dense, per worker.
            "bytes_sent_total": mine[-1].get("bytes_sent_total"),
            "dense_bytes_total": mine[-1].get("dense_bytes_total"),
        }
    last = rows[-1] if rows else {}
    steps = last.get("step", 0)
    finals = [m["final_val_loss"] for m in per_member.values() if m["final_val_loss"] is not None]
    bests = [m["best_val_loss"] for m in per_member.values() if m["best_val_loss"] is not None]
    sent = sum(m["bytes_sent_total"] for m in per_member.values())
    dense = sum(m["dense_bytes_total"] for m in per_member.values())
    return {
        "status": status,
        "steps": steps,
        "wall_time_s": round(wall_time_s, 2),
        "tokens": last.get("tokens", 0) * len(members),
        "train_time_s": round(last.get("time_s", 0.0), 2),
        # Throughput of the training steps themselves (start-up and evaluation excluded).
        "tokens_per_s": round(last["tokens"] * len(members) / last["time_s"], 1) if last.get("time_s") else None,
        "final_val_loss": min(finals) if finals else None,
        "best_val_loss": min(bests) if bests else None,
        "final_val_accuracy": max((m["final_val_accuracy"] for m in per_member.values()
                                   if m["final_val_accuracy"] is not None), default=None),
        "unigram_baseline": info.get("unigram_baseline"),
        "params_per_member": info.get("params_per_member"),
        "world_size": info.get("world_size"),
        "initial_hyperparams": info.get("initial_hyperparams"),
        "members": per_member,
        "bytes_sent_per_worker": sent,
        "dense_bytes_per_worker": dense,
        "compression_ratio": round(dense / sent, 2) if sent else None,
        # Worker groups that failed and were restarted (or that ended the run): launch/runs/failures.py.
        "failures": info.get("failures", {"count": 0, "last": []}),
    }
