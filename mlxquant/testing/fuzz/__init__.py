"""mlxquant's own fuzz harness (issue 11): every reader, and conversion end to end, on mutated
real inputs, each input under an address-space cap and a time limit.

- :mod:`.seeds`: seed inputs built at run time from the real models (SmolLM2's GGUF, the float
  tiny-shakespeare-llama), kept small so one input takes microseconds to milliseconds.
- :mod:`.layout`: where the integer fields of GGUF / safetensors / imatrix ``.dat`` seeds are.
- :mod:`.mutate`: byte and structure (JSON) mutations; each input a pure function of
  (campaign seed, target, index).
- :mod:`.targets`: one function per reader calling the public entry; deliberately broken
  self-checks.
- :mod:`.worker`: runs inputs in-process, classifies outcomes, saves reproducers.
- :mod:`.runner`: the campaign (seeds, worker processes, scheduling, hang/crash handling).
- :mod:`.report`: the table, JSON, and the findings as Markdown.

Why plain mutation rather than hypothesis or atheris: atheris is not installed (and its coverage
guidance needs instrumented native code to pay off here); hypothesis is, but its strategies
generate and shrink Python values at ~1-10k examples/s with per-example bookkeeping, and its
database and shrinking assume one process without hard kills. The readers' interesting inputs
are *near-valid real files*, which structured mutation of real seeds reaches directly; a pure
``(seed, target, index) -> input`` function makes every outcome reproducible across processes
without a database, and keeps the workers at thousands of inputs per second.

Run it: ``python benchmarks/fuzz.py --seconds 60`` (see that file); CI runs
``tests/test_fuzz_smoke.py``.
"""

from .runner import Campaign, CampaignResult, run_campaign
from .targets import SELF_CHECKS, TARGETS

__all__ = ["Campaign", "CampaignResult", "run_campaign", "TARGETS", "SELF_CHECKS"]
