"""How a user's file is split: the last `val_fraction` of it is the validation split
(token_file's tokens, image_file's images), so validation can count both without reading."""


def tail_split(count: int, val_fraction: float) -> tuple[int, int]:
    """(training, validation) sizes of `count` items whose tail is the validation split."""
    split = int(count * (1 - val_fraction))
    return split, count - split
