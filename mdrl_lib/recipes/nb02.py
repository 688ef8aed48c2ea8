"""Notebook ``02_shared_routes``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, Scores, Stage, ObjectiveBatch

PAIRS = tuple(f"{a},{b}" for a in DOMAIN_NAMES for b in DOMAIN_NAMES if a != b)
REPLICATES = (0, 1)  # two objective batches per domain: their gradient cosine is the noise floor


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 02's parameters: routes, gradient batches, ablations and the experts' comparison."""

    notebook: ClassVar[str] = "02_shared_routes"

    route_fraction: float = option(0.1, "q: a domain's active route is its top q of MLP channels by mean "
                                        "|activation|", above=0.0, maximum=0.5)
    route_prompts: int = option(300, "RL training prompts per domain whose activity defines its routes (fewer if a "
                                     "domain has fewer)", minimum=1, maximum=10**6)
    gradient_prompts: int = option(96, "prompts per domain-objective batch, two batches per domain (toy QA has 99 RL "
                                       "prompts)", minimum=1, maximum=10**6)
    gradient_samples: int = option(16, "completions sampled per prompt; only verified-correct ones enter L_A",
                                   minimum=1, maximum=1024)
    gradient_pair: str = option("math,qa", "the pair the C3 check reads (the paper's pair)", choices=PAIRS)
    ablation_domain: str = option("math", "the domain whose route-only channels are ablated", choices=DOMAIN_NAMES)
    ablation_pair: str = option("", 'the pair whose shared channels are ablated, e.g. "math,qa"; empty: the pair '
                                    "sharing most at answer positions", choices=("",) + PAIRS)
    ablation_mode: str = option("zero", '"zero": ablated channels output 0; "mean": their mean over the domains\' '
                                        "answer tokens", choices=("zero", "mean"))
    compare_experts: str = option("auto", 'experts\' updates on shared routes: "auto" (if already stored), "yes" '
                                          '(train them), "no"', choices=("auto", "yes", "no"))

    @property
    def gradient_domains(self) -> tuple[str, str]:
        a, b = self.gradient_pair.split(",")
        return a, b


def objective_batch(params: Params, domain: str, replicate: int) -> ObjectiveBatch:
    """One of ``domain``'s two objective batches at the base (``replicate`` 0 or 1 seeds its prompts)."""
    return ObjectiveBatch(Base(), domain, prompts=params.gradient_prompts, samples=params.gradient_samples,
                          seed=replicate)


def expert_specs() -> dict[str, Stage]:
    """The single-domain experts notebook 01 trains, whose updates section 3b compares on shared routes."""
    return {n: Stage(Base(), n) for n in DOMAIN_NAMES}


def plan(kit, params: Params) -> list:
    """Every spec notebook 02 asks for: the base and its scores, two objective batches per domain, and the
    experts when ``compare_experts`` is ``yes``."""
    specs: list = [Base(), Scores(Base())]
    specs += [objective_batch(params, n, r) for n in DOMAIN_NAMES for r in REPLICATES]
    if params.compare_experts == "yes":
        specs += list(expert_specs().values())
    return specs


def if_stored(kit, params: Params) -> list:
    """Specs notebook 02 reads only when they are already stored (``compare_experts`` ``auto``)."""
    return list(expert_specs().values()) if params.compare_experts == "auto" else []
