"""The number types of every spec section (never a boolean or text, finite unless said),
a strict boolean (`Bool`: only true or false), and how a spec value is quoted in a
problem (`shorten`).

Pydantic's lax mode takes `true` for 1 and the text "inf" for a float, and YAML reads
`yes`, `on` and `true` as booleans and `.inf`/`.nan` as floats, so `lr: true` would train
at 1.0 and `--set distributed.num_workers=yes` start one worker. Every numeric field of
every section (tests/unit/launch/test_bad_input_classes.py walks them all) is one of
these types instead of `int`/`float`. An integral float (`steps: 1e4`) still counts as
an int. A non-finite value means something in one place only, `population.round_timeout_s:
.inf` (no time limit), which uses `FloatOrInf`.

They live in compression/, the lowest layer, so that every section's model can use them
(`launch -> pbt -> trainers -> distrib -> compression`).
"""
import math
from typing import Annotated

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field
from pydantic_core import PydanticCustomError


def _plain_number(value):
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "expected a number, got a boolean (YAML reads true/false, "
                                  "yes/no and on/off as booleans); write a number")
    if isinstance(value, str):
        raise PydanticCustomError("text_not_number", "expected a number, got text" + (
            "; write the number without quotes" if _reads_as_number(value) else ""))
    return value


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _not_nan(value: float) -> float:
    if math.isnan(value):
        raise PydanticCustomError("nan_not_number", "expected a number, got .nan")
    return value


NOT_BOOL_OR_TEXT = BeforeValidator(_plain_number)  # the marker the test looks for

Int = Annotated[int, NOT_BOOL_OR_TEXT]
Float = Annotated[float, NOT_BOOL_OR_TEXT, AllowInfNan(False)]
FloatOrInf = Annotated[float, NOT_BOOL_OR_TEXT, AfterValidator(_not_nan)]

PositiveInt = Annotated[Int, Field(gt=0)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
# Seeds feed numpy's SeedSequence (non-negative) and torch.manual_seed (< 2**64, after
# adding a rank or member offset); 32 bits is what most tools take.
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]


def _plain_bool(value):
    if not isinstance(value, bool):
        raise PydanticCustomError("not_bool", "expected a boolean, not a number or text; write true or false")
    return value


# Pydantic's lax bool takes 1, "yes" and "off": a switch must be YAML's true or false.
Bool = Annotated[bool, BeforeValidator(_plain_bool)]


def shorten(value: object, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: an offending value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
