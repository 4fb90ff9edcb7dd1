"""Spec section `population`: how many members train together, and how PBT evolves them.

    population:
      size: 8
      pbt:
        perturbation_interval: 100
        hyperparam_mutations:
          lr: {loguniform: [1.0e-4, 1.0e-2]}
          dropout: {uniform: [0.0, 0.3]}
          density: [0.001, 0.01, 0.1]     # a plain list is a choice

The `pbt` keys keep the meanings of Ray Tune's `PopulationBasedTraining`
(`burn_in` is its `burn_in_period`); pbt/selection.py and pbt/mutations.py say where
and why we differ.
"""
from typing import Callable, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from compression.spec_types import Float, FloatOrInf, Int, PositiveInt

# The hyperparameters PBT may mutate, each with the values it can take. `warmup` is a
# fraction of train.steps so that it means the same thing for every run length.
DOMAINS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("> 0", lambda x: x > 0),
    "weight_decay": (">= 0", lambda x: x >= 0),
    "warmup": ("in [0, 1) (a fraction of train.steps)", lambda x: 0 <= x < 1),
    "dropout": ("in [0, 1)", lambda x: 0 <= x < 1),
    "density": ("in (0, 1] (as compression.density)", lambda x: 0 < x <= 1),
}
KINDS = ("loguniform", "uniform", "choice")
_FORMS = "write {loguniform: [low, high]}, {uniform: [low, high]}, {choice: [a, b, ...]} or a plain list [a, b, ...]"


class Mutation(BaseModel):
    """How one hyperparameter is sampled and explored: a range (`loguniform`, `uniform`)
    or a list of values (`choice`; explore moves to a neighbour in the order written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["loguniform", "uniform", "choice"]
    values: tuple[Float, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data):
        if isinstance(data, (list, tuple)):
            return {"kind": "choice", "values": data}
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in KINDS:
            kind, values = next(iter(data.items()))
            return {"kind": kind, "values": values}
        if isinstance(data, dict) and set(data) == {"kind", "values"}:
            return data  # the Python form, Mutation(kind=..., values=...)
        raise ValueError(f"not a mutation: {data!r}; {_FORMS}")

    @model_validator(mode="after")
    def _well_formed(self):
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs at least one value")
            return self
        if len(self.values) != 2:
            raise ValueError(f"{self.kind} needs exactly [low, high], got {list(self.values)}")
        low, high = self.values
        if not low < high:
            raise ValueError(f"{self.kind} needs low < high, got [{low}, {high}]")
        if self.kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform needs low > 0 (it samples log(x)), got {low}; use uniform to include 0")
        return self

    @model_serializer
    def _to_yaml(self) -> dict:
        # spec.yaml is written from model_dump(); keep the form the user wrote.
        return {self.kind: list(self.values)}


class PBTConfig(BaseModel):
    """Truncation selection every `perturbation_interval` steps (Jaderberg et al. 2017)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    perturbation_interval: PositiveInt = Field(
        100, description="steps between exploit/explore rounds (Ray Tune's perturbation_interval)")
    burn_in: Int = Field(0, ge=0, description="no exploit before this step (Ray Tune's burn_in_period); "
                         "a member with a non-finite loss is replaced even during burn-in")
    quantile_fraction: Float = Field(
        0.25, description="bottom fraction copies the top fraction, in (0, 0.5]; at least one member "
        "each when size >= 2 (Ray Tune's rule: ceil(size * fraction), at most size // 2)")
    resample_probability: Float = Field(
        0.25, ge=0, le=1, description="chance that explore redraws a value instead of perturbing it")
    perturbation_factors: tuple[Float, ...] = Field(
        (1.2, 0.8), description="explore multiplies a range value by one of these (result clipped to the range)")
    hyperparam_mutations: dict[str, Mutation] = Field(
        description=f"hyperparameter -> mutation; names: {', '.join(DOMAINS)}; {_FORMS}")
    metric: Literal["val_loss", "loss"] = Field("val_loss", description="what members are ranked by")
    mode: Literal["min", "max"] = Field("min", description="whether a lower or a higher metric is better")
    bytes_penalty: Float = Field(
        0.0, ge=0, description="score = metric + bytes_penalty * (bytes sent / dense bytes) for mode min, "
        "metric - ... for mode max: sending more always counts against a member")
    synch: bool = Field(
        False, description="population.backend tune only: Ray Tune's synchronous PBT (every trial waits at each "
        "perturbation step for the others) instead of its asynchronous default")

    def is_perturbation_step(self, step: int) -> bool:
        """A round after every `perturbation_interval` completed steps, from `burn_in` on."""
        return step > 0 and step >= self.burn_in and step % self.perturbation_interval == 0

    @field_validator("quantile_fraction")
    @classmethod
    def _quantile(cls, v: float) -> float:
        if not 0 < v <= 0.5:
            raise ValueError("quantile_fraction must be in (0, 0.5] (0.25: bottom 25% copy top 25%)")
        return v

    @field_validator("perturbation_factors")
    @classmethod
    def _factors(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(f <= 0 for f in v):
            raise ValueError("perturbation_factors must be a non-empty list of positive numbers, e.g. [1.2, 0.8]")
        return v

    @field_validator("hyperparam_mutations")
    @classmethod
    def _names_and_domains(cls, mutations: dict[str, Mutation]) -> dict[str, Mutation]:
        if not mutations:
            raise ValueError(f"give at least one hyperparameter to mutate; names: {', '.join(DOMAINS)}")
        problems = []
        for name, mutation in mutations.items():
            if name not in DOMAINS:
                problems.append(f"unknown hyperparameter {name!r}; valid names: {', '.join(DOMAINS)}")
                continue
            text, ok = DOMAINS[name]
            if not all(ok(v) for v in mutation.values):
                problems.append(f"{name}: every value must be {text}, got {mutation.kind} {list(mutation.values)}")
        if problems:
            raise ValueError("; ".join(problems))
        return mutations


class PopulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["vectorized", "tune"] = Field(
        "vectorized", description="vectorized: the members train inside one population-batched model; tune: "
        "each member is a Ray Tune trial (a plain model, its own Ray Train job), scheduled by Ray Tune's "
        "PopulationBasedTraining")
    size: PositiveInt = Field(
        1, description="members P trained together in one population-batched model (1 = a plain model); "
        "with backend tune, the number of trials")
    pbt: PBTConfig | None = Field(
        None, description="population-based training among the P members; omit for independent members")
    groups: PositiveInt = Field(
        1, description="G vectorized groups of `size` members, each trained by its own Ray Train worker group; "
        "PBT ranks all G × size members together and a member may copy one of another group")
    round_timeout_s: FloatOrInf = Field(
        900.0, gt=0, description="groups > 1: how long a group waits at a PBT round for the other groups "
        "(and for a donor's state) before failing with an error; covers a group restarting from its checkpoint; "
        ".inf waits without limit (the one spec value that may be infinite)")

    @model_validator(mode="after")
    def _pbt_needs_two(self):
        if self.pbt is not None and self.size * self.groups < 2:
            raise ValueError("population.pbt needs population.size >= 2 (a lone member has no one to copy); "
                             "raise size or remove pbt")
        return self
