"""Spec section `population`: how many members train together in one model."""
from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class PopulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: PositiveInt = Field(
        1, description="members P trained together in one population-batched model (1 = a plain model)")
