"""The run's TensorBoard event files (launch/runs/tensorboard.py, written by the metric log):
one run per member with its losses, hyperparameters and bytes, exploits as text, and a purge
marker after a rewind. Read back record by record with TensorBoard's own protobuf."""
import struct
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event

from launch.runs.recorder import MetricsLog
from pbt.events import Event as PBTEvent


def read_events(folder: Path) -> list[Event]:
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length, crc of length, payload, crc of payload
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event()
            event.ParseFromString(data[offset + 12:offset + 12 + length])
            events.append(event)
            offset += 12 + length + 4
    return events


def scalars(events: list[Event]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def row(step: int, member: int, loss: float, **extra) -> dict:
    return {"step": step, "member": member, "loss": loss, "lr": 1e-3, "bytes_sent": 100, "bytes_sent_total": 100 * step,
            "dense_bytes": 1000, "hyperparams": {"lr": 1e-3, "density": 0.1}, **extra}


def test_members_losses_hyperparams_bytes_and_exploits(tmp_path):
    log = MetricsLog(str(tmp_path))
    log.log([row(10, 0, 3.0, val_loss=3.1), row(10, 1, 2.5)])
    log.log_events([PBTEvent(step=10, target=0, source=1, reason="truncation", target_score=3.1, source_score=2.5,
                             old={"lr": 1e-3}, new={"lr": 1.2e-3}, operations={"lr": "*1.2"}).to_json()])
    log.log([row(20, 0, 2.0), row(20, 1, 2.2)])
    log.snapshot()  # flushes

    member0 = read_events(tmp_path / "tensorboard" / "member00")
    values = scalars(member0)
    assert values["loss/train"] == [(10, 3.0), (20, 2.0)] and values["loss/val"] == [(10, pytest.approx(3.1))]
    assert values["bytes/sent_total"] == [(10, 1000.0), (20, 2000.0)]
    assert [step for step, _ in values["hyperparams/density"]] == [10, 20]
    texts = [v for e in member0 for v in e.summary.value if v.tag.startswith("pbt")]
    assert texts and b"member 0 <- member 1" in texts[0].tensor.string_val[0]
    assert scalars(read_events(tmp_path / "tensorboard" / "member01"))["loss/train"] == [
        (10, 2.5), (20, pytest.approx(2.2))]


def test_a_rewind_purges_what_comes_after_the_checkpoint(tmp_path):
    log = MetricsLog(str(tmp_path))
    log.log([row(10, 0, 3.0), row(20, 0, 2.0)])
    log.rewind(10)
    log.log([row(20, 0, 2.1)])
    log.snapshot()
    events = read_events(tmp_path / "tensorboard" / "member00")
    # A SessionLog START at step 11: TensorBoard hides the earlier files' events from step 11 on.
    assert any(e.HasField("session_log") and e.step == 11 for e in events)
    assert scalars(events)["loss/train"] == [(10, 3.0), (20, 2.0), (20, pytest.approx(2.1))]  # 2.0: hidden
