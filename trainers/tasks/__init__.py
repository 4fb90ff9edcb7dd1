"""Tasks by spec name (`task.kind`): each builds a data object of the loop's
trainers.contracts.TaskData protocol (batches by rank, member and step; vocab_size,
num_classes (None for language modelling), pad_id, causal, grid (None for 1-D tasks),
patch_size)."""
from trainers.config import ImageFileTask, ListOpsTask, PathfinderTask, StdlibCodeTask, TaskConfig, TokenFileTask
from trainers.contracts import TaskData
from trainers.tasks.image_file import load_image_file
from trainers.tasks.listops import ListOpsData
from trainers.tasks.lm import LMData, load_token_file, stdlib_corpus
from trainers.tasks.splits import tail_split
from trainers.tasks.pathfinder_data import pathfinder_data


def build_task_data(task: TaskConfig, *, seed: int) -> TaskData:
    if isinstance(task, StdlibCodeTask):
        train, val = stdlib_corpus(task.val_fraction)
        return LMData(train, val, vocab_size=256, seq_len=task.seq_len, seed=seed)
    if isinstance(task, TokenFileTask):
        tokens = load_token_file(task.path, task.dtype)
        split, _ = tail_split(len(tokens), task.val_fraction)
        return LMData(tokens[:split], tokens[split:], vocab_size=task.vocab_size, seq_len=task.seq_len, seed=seed)
    if isinstance(task, ListOpsTask):
        return ListOpsData(seq_len=task.seq_len, num_train=task.num_train, num_val=task.num_val,
                           num_test=task.num_test, seed=seed, min_len=task.min_len, max_len=task.max_len,
                           max_depth=task.max_depth, max_args=task.max_args)
    if isinstance(task, PathfinderTask):
        return pathfinder_data(size=task.size, difficulty=task.difficulty, num_train=task.num_train,
                               num_val=task.num_val, num_test=task.num_test, seed=seed, patch_size=task.patch_size)
    if isinstance(task, ImageFileTask):
        return load_image_file(task.path, task.labels_path, val_fraction=task.val_fraction, seed=seed,
                               patch_size=task.patch_size)
    raise TypeError(f"unknown task config {type(task).__name__}")
