"""benchmarks/device_check.py's JSON report as markdown: one table per part; a failed part
is one line with its error."""

TITLES = {"1": "Population overhead time(P) / (P x time(1))", "2": "Attention kinds, forward + backward",
          "3": "Step phases and projected speedup over dense", "4": "Training job and resume"}


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def population(part: dict) -> list[str]:
    lines = [f"{part['dtype']}"]
    for label, model in part["models"].items():
        sizes = model["sizes"]
        lines += ["", f"{label}: d_model {sizes['d_model']}, {sizes['n_layers']} layers, "
                      f"{model['params_per_member']:,} parameters per member, batch {sizes['batch']} x "
                      f"{sizes['seq_len']}; time(1) = {model['time_1_s'] * 1e3:.2f} ms", ""]
        lines += _table(["P", "step ms", "time(P) / (P time(1))"],
                        [[r["P"], f"{r['batched_s'] * 1e3:.2f}", f"{r['batched_ratio']:.3f}"] for r in model["rows"]])
    return lines


def attention(part: dict) -> list[str]:
    rows = []
    for r in part["rows"]:
        options = ", ".join(f"{k}={v}" for k, v in r.get("options", {}).items())
        if "error" in r:
            rows.append([r["kind"], r["mode"], r["T"], "failed: " + r["error"], "", "", options])
        else:
            speedup = f"{r['speedup']:.2f}x vs {r['vs']}" if "speedup" in r else ""
            rows.append([r["kind"], r["mode"], r["T"], f"{r['ms']:.2f}", speedup, f"{r['mb']:.1f}", options])
    return [f"{part['precision']}, width {part['width']}, {part['heads']} heads, batch 1", ""] + _table(
        ["kind", "mode", "T", "ms", "speedup", "peak MB", "options changed"], rows)


def phases(part: dict) -> list[str]:
    names = ["forward+backward", "exchange", "clip", "optimizer", "step"]
    rows = [[label, *(f"{m[n] * 1e3:.1f}" for n in names), f"{m['bytes_sent']:,.0f}"]
            for label, m in part["phases_s"].items()]
    lines = [f"{part['spec']} {' '.join(part['overrides'])}; medians of {part['steps'] - part['skipped']} steps, "
             f"density {part['density']}", ""]
    lines += _table(["method", *(f"{n} ms" for n in names), "bytes sent"], rows)
    lines += ["", f"Projected (launch/study/netmodel.py, latency {part['latency_s'] * 1e6:.0f} us, "
                  "no decompression term): dense step time / method step time", ""]
    lines += _table(["W", "Gbit/s", "dense step ms", "top-k", "random-k"],
                    [[p["W"], p["gbps"], f"{p['dense_step_s'] * 1e3:.1f}", f"{p['topk_speedup']:.2f}x",
                      f"{p['randomk_speedup']:.2f}x"] for p in part["projection"]])
    return lines


def training(part: dict) -> list[str]:
    verdict = "identical" if part["identical"] else ("within tolerance" if part["reproduced"] else "NOT reproduced")
    return _table(["steps", "precision", "checkpoint at", "rows compared", "max abs diff", "resume", "final loss",
                   "final val loss", "tokens/s"],
                  [[part["steps"], part["precision"], part["checkpoint_step"], part["rows_compared"],
                    f"{part['max_abs_diff']:.3g}", verdict, f"{part['final_loss']:.4f}",
                    "" if part["final_val_loss"] is None else f"{part['final_val_loss']:.4f}",
                    f"{part['tokens_per_s']:,.0f}"]])


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# Device check, {env['date']}", "",
             f"{env.get('gpu', 'CPU')}, torch {env['torch']}, Python {env['python']}"
             f"{', quick form' if report['quick'] else ''}; Ray imported: {report['ray_imported']}", ""]
    render = {"1": population, "2": attention, "3": phases, "4": training}
    for number, part in report["parts"].items():
        lines += [f"## {number}. {TITLES[number]} ({part['seconds']:.0f} s)", ""]
        lines += render[number](part) if part["ok"] else [f"FAILED: {part['error']}"]
        lines.append("")
    return "\n".join(lines)
