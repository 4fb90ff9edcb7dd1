"""`python -m launch export` and `python -m launch sample`: take a member away from a run.

export: one member (default: the best) as a plain single model (trainers/export.py),
written to RUN_DIR/export-member<N>/ unless --out says where.
sample: text from a language-model member, from a run directory or an export folder.
Bad input (not a run directory, a member that is not there, a classifier to sample from)
raises SpecError naming the argument: exit 2 before anything is written.
"""
from pathlib import Path

from launch.runs.directory import read_run_spec
from launch.runs.files import SUMMARY, read_json
from launch.runs.members import best_member, final_checkpoint
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec
from trainers.export import CONFIG, SHAPE_KEYS, ExportedModel, load_exported, save_member
from trainers.sampling import generate
from trainers.tasks import build_task_data


def _member_id(run_dir: Path, member: str) -> int:
    if member == "best":
        try:
            return best_member(run_dir)
        except ValueError as err:
            raise SpecError([Problem("--member", str(err))]) from None
    if not member.isdigit():
        raise SpecError([Problem("--member", f"{member!r}: give `best` or a member id (0, 1, ...)")])
    return int(member)


def export_member(run_dir: Path, member: str = "best", out: Path | None = None) -> Path:
    tree = read_run_spec(run_dir)
    member_id = _member_id(run_dir, member)
    return _export(run_dir, tree, member_id, out or _default_folder(run_dir, member_id))


def _default_folder(run_dir: Path, member_id: int) -> Path:
    return run_dir / f"export-member{member_id}"


def _export(run_dir: Path, tree: dict, member_id: int, out: Path) -> Path:
    spec = JobSpec.model_validate(tree)
    try:
        checkpoint = final_checkpoint(run_dir, tree, member_id)
    except ValueError as err:
        raise SpecError([Problem("--member", str(err))]) from None
    data = build_task_data(spec.task, seed=spec.seed)  # the model's shape facts
    shape = {key: spec.task.seq_len if key == "max_seq_len" else getattr(data, key) for key in SHAPE_KEYS}
    summary_member = (read_json(run_dir / SUMMARY).get("members") or {}).get(str(member_id)) or {}
    source = {"run_dir": str(run_dir.resolve()), "member": member_id, "step": int(checkpoint.state["step"]),
              "final_val_loss": summary_member.get("final_val_loss"), "hyperparams": summary_member.get("hyperparams")}
    return save_member(out, checkpoint.state["model"], member=checkpoint.row,
                       members=checkpoint.members,
                       config={"model": spec.model.model_dump(mode="json"), "task": spec.task.model_dump(mode="json"),
                               "shape": shape, "source": source})


def load_member(path: Path, member: str = "best") -> ExportedModel:
    """An export folder as it is, or a run directory's member: exported into its default
    folder the first time, read from there afterwards (exporting builds the task's data)."""
    if (path / CONFIG).is_file():
        return load_exported(path)
    tree = read_run_spec(path)
    member_id = _member_id(path, member)
    folder = _default_folder(path, member_id)
    return load_exported(folder if (folder / CONFIG).is_file() else _export(path, tree, member_id, folder))


def sample_text(path: Path, *, member: str, prompt: str, tokens: int, temperature: float, seed: int) -> str:
    if tokens < 1 or temperature < 0:
        raise SpecError([Problem("--tokens" if tokens < 1 else "--temperature",
                                 "give --tokens >= 1 and --temperature >= 0 (0: always the most likely token)")])
    model = load_member(path, member)
    task = model.config["task"]["kind"]
    if not model.causal:
        raise SpecError([Problem(str(path), f"task {task!r} classifies sequences; only language-model members "
                                            "(stdlib_code, token_file) generate text")])
    if task == "token_file":  # token ids in, token ids out
        try:
            prompt_ids = [int(word) for word in prompt.split()]
        except ValueError:
            raise SpecError([Problem("--prompt", "a token_file model reads token ids: give them as integers "
                                                 "separated by spaces")]) from None
    else:  # stdlib_code: bytes
        prompt_ids = list(prompt.encode())
    if not prompt_ids:
        raise SpecError([Problem("--prompt", "give at least one token to start from")])
    ids = generate(model, prompt_ids, tokens=tokens, temperature=temperature, seed=seed)
    return " ".join(map(str, ids)) if task == "token_file" else bytes(ids).decode("utf-8", errors="replace")
