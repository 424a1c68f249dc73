"""Budget-driven mixed precision: every tensor's type for a size budget, chosen by estimated and
measured cost (:func:`allocate`), written as a GGUF and as a llama-quantize recipe."""

from .api import Allocation, AllocationError, allocate
from .solve import BudgetError, Option

__all__ = ["Allocation", "AllocationError", "BudgetError", "Option", "allocate"]
