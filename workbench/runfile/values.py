"""The value types every run file shares: finite numbers, counts, fractions (strict: no string, no bool where a
number belongs; NaN and infinity refused), and the two model bases (closed, or open to keys a newer wb adds)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number: ints are accepted, bools and strings are not."""
Count = Annotated[int, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
Percent = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=100)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
ItemId = Annotated[int, Field(strict=True)] | str


class Strict(BaseModel):
    """Every key known: an unknown one is refused."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Known fields typed and checked; other keys (from a newer wb, or free-form) kept as they are."""

    model_config = ConfigDict(extra="allow")
