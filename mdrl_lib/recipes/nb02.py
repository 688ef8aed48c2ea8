"""Notebook ``02_shared_routes``'s recipe: its parameters, what it asks the kit for, and what its cells and
claim checks read from the cached artifacts (route activity, ablations, objective gradients, the
gradients' and the experts' cosines on shared routes: the specs of :mod:`mdrl_lib.routes`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES
from mdrl_lib.recipes.params import NotebookParams, option, pair_choice_text  # noqa: F401 (the notebook reads it here)
from mdrl_lib.recipes import params as common
from mdrl_lib.specs import Base, ObjectiveBatch, Scores, Stage

if TYPE_CHECKING:
    import pandas as pd

    from mdrl_lib.routes import (AblationScores, ChannelActivity, GradientGeometry, GradientsOnRoutes,
                                 MatchedAblationControls, ObjectiveGradient, RouteActivity, UpdatesOnRoutes)

PAIRS = common.domain_pairs()
REPLICATES = (0, 1, 2)  # objective batches per domain: C3's signs must reproduce on each; 0 vs 1 is the noise floor
ROUTE_REPLICATES = (0, 1)  # the batches section 3b reads on shared routes (its stored artifact)
AFTER = "math"  # C3 is measured again at this domain's expert, the first stage of the paper's pair
POSITIONS = ("prompt", "answer")


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 02's parameters: routes, gradient batches, ablations and the experts' comparison."""

    notebook: ClassVar[str] = "02_shared_routes"

    route_fraction: float = option(0.1, "q: a domain's active route is its top q of MLP channels by mean "
                                        "|activation|", above=0.0, maximum=0.5)
    route_prompts: int = option(300, "RL training prompts per domain whose activity defines its routes (fewer if a "
                                     "domain has fewer)", minimum=1, maximum=10**6)
    gradient_prompts: int = option(96, "prompts per domain-objective batch, three batches per domain (toy QA has 99 RL "
                                       "prompts)", minimum=1, maximum=10**6)
    gradient_samples: int = option(16, "completions sampled per prompt; only verified-correct ones enter L_A",
                                   minimum=1, maximum=1024)
    gradient_pair: str = option("math,auto", "the pair the C3 check reads; \"A,auto\": B is the later stage of the "
                                             "chain that lowers A most (on the selection half of A's held-out "
                                             "items); the paper's pair is math,qa",
                                choices=common.chosen_pairs() + PAIRS)
    ablation_domain: str = option("math", "the domain whose route-only channels are ablated", choices=DOMAIN_NAMES)
    ablation_pair: str = option("", 'the pair whose shared channels are ablated, e.g. "math,qa"; empty: the pair '
                                    "sharing most at answer positions", choices=("",) + PAIRS)
    ablation_mode: str = option("zero", '"zero": ablated channels output 0; "mean": their mean over the domains\' '
                                        "answer tokens", choices=("zero", "mean"))
    compare_experts: str = option("auto", 'experts\' updates on shared routes: "auto" (if already stored), "yes" '
                                          '(train them), "no"', choices=("auto", "yes", "no"))

    @property
    def gradient_domains(self) -> tuple[str, str]:
        """(A, B); a pair still reading ``"A,auto"`` must first be settled by :func:`resolve`."""
        a, b = self.gradient_pair.split(",")
        if b == "auto":
            raise ConfigError(f"gradient_pair is {self.gradient_pair!r}: settle it first with "
                              f"recipe.resolve(kit, params), which chooses B from the run's chain")
        return a, b


# ------------------------------------------------------------------------------------------- the specs


def objective_batch(params: Params, domain: str, replicate: int, at=None) -> ObjectiveBatch:
    """One of ``domain``'s objective batches, sampled from ``at`` (default: the base; ``replicate`` seeds its
    prompts and samples)."""
    return ObjectiveBatch(at if at is not None else Base(), domain, prompts=params.gradient_prompts,
                          samples=params.gradient_samples, seed=replicate)


def after_stage() -> Stage:
    """The checkpoint C3 is measured at a second time: the :data:`AFTER` expert (the single-domain stage
    notebook 01 trains, and the first stage of the paper's Math-then-other pair)."""
    return Stage(Base(), AFTER)


def expert_specs() -> dict[str, Stage]:
    """The single-domain experts notebook 01 trains, whose updates section 4 compares on shared routes."""
    return {n: Stage(Base(), n) for n in DOMAIN_NAMES}


def activity_specs(params: Params) -> dict[str, dict[str, ChannelActivity]]:
    """positions -> domain -> the base's :class:`~mdrl_lib.routes.ChannelActivity` over ``route_prompts`` prompts."""
    from mdrl_lib.routes import ChannelActivity

    return {p: {n: ChannelActivity(Base(), n, p, params.route_prompts) for n in DOMAIN_NAMES} for p in POSITIONS}


def ablation_specs(params: Params) -> dict[str, AblationScores]:
    """The three ablations of section 2: ``only`` (``ablation_domain``'s route-only channels) with its random
    ``only control`` (same per-layer counts), and ``shared`` (``ablation_pair``'s shared channels, or the
    pair sharing most), whose control is :func:`matched_controls_spec`."""
    from mdrl_lib.routes import AblationScores

    common = {"mode": params.ablation_mode, "route_fraction": params.route_fraction,
              "route_prompts": params.route_prompts}
    pair = tuple(params.ablation_pair.split(",")) if params.ablation_pair else ()
    only = AblationScores(Base(), "only", (params.ablation_domain,), **common)
    shared = AblationScores(Base(), "shared", pair, **common)
    return {"only": only, "only control": dataclasses.replace(only, control=True, seed=params.seed), "shared": shared}


def matched_controls_spec(params: Params) -> MatchedAblationControls:
    """C4's control: activation-matched random sets for the shared channels, ``C4_CONTROL_DRAWS`` per domain
    of the pair, matched in ``C4_ACTIVATION_BINS`` quantile bins (rules file [C4])."""
    from mdrl_lib.claims.nb02 import C4_ACTIVATION_BINS, C4_CONTROL_DRAWS
    from mdrl_lib.routes import MatchedAblationControls

    pair = tuple(params.ablation_pair.split(",")) if params.ablation_pair else ()
    return MatchedAblationControls(Base(), pair, draws=C4_CONTROL_DRAWS, bins=C4_ACTIVATION_BINS, seed=params.seed,
                                   mode=params.ablation_mode, route_fraction=params.route_fraction,
                                   route_prompts=params.route_prompts)


def gradient_specs(params: Params) -> dict[tuple[str, int], ObjectiveGradient]:
    """(domain, replicate) -> the gradient of that objective batch at the base."""
    from mdrl_lib.routes import ObjectiveGradient

    return {(n, r): ObjectiveGradient(Base(), objective_batch(params, n, r)) for n in DOMAIN_NAMES for r in REPLICATES}


def after_gradient_specs(params: Params) -> dict[tuple[str, int], ObjectiveGradient]:
    """(domain, replicate) -> the gradient at :func:`after_stage` of that domain's batch sampled there, for the
    two domains of ``gradient_pair`` (C3 after the first stage)."""
    from mdrl_lib.routes import ObjectiveGradient

    at = after_stage()
    return {(n, r): ObjectiveGradient(at, objective_batch(params, n, r, at)) for n in params.gradient_domains
            for r in REPLICATES}


def route_gradients_spec(params: Params) -> GradientsOnRoutes:
    """Section 3b: the gradients' cosines on the weights of the channels two domains share (batches
    :data:`ROUTE_REPLICATES`)."""
    from mdrl_lib.routes import GradientsOnRoutes

    specs = gradient_specs(params)
    return GradientsOnRoutes(tuple(specs[(n, r)] for n in DOMAIN_NAMES for r in ROUTE_REPLICATES), Base(),
                             params.route_fraction, params.route_prompts, seed=params.seed)


def expert_updates_spec(kit, params: Params) -> tuple[UpdatesOnRoutes | None, str]:
    """Section 4's spec, or ``None`` with the reason it is skipped: ``compare_experts`` is ``no``, fewer than
    two experts are stored under ``auto``, or the scale is full (the pretrained base's weights are not in
    the run directory)."""
    from mdrl_lib.routes import UpdatesOnRoutes

    experts = expert_specs()
    stored = [n for n, spec in experts.items() if kit.store.get(kit.key(spec)) is not None]
    wanted = list(DOMAIN_NAMES) if params.compare_experts == "yes" else stored
    if params.compare_experts == "no" or len(wanted) < 2:
        return None, (f"Skipped: compare_experts={params.compare_experts!r}, experts stored: {stored or 'none'}. "
                      "Run notebook 01 first, or set compare_experts = 'yes'.")
    if params.config.scale == "full":
        return None, ("Skipped at full scale: the pretrained base's weights live in the Hugging Face cache, not in "
                      "the run directory, and this comparison reads both weight files.")
    return UpdatesOnRoutes(Base(), tuple(experts[n] for n in wanted), params.route_fraction, params.route_prompts,
                           seed=params.seed), ""


def resolve(kit, params: Params, *, build: bool = True) -> Params | None:
    """``params`` with a ``gradient_pair`` of ``"A,auto"`` replaced by the pair the run's chain shows doing the
    damage (:func:`~mdrl_lib.recipes.params.resolve_pairs`: trains and scores the chain if it is not stored);
    ``None`` when ``build`` is False and the chain is not scored yet."""
    return common.resolve_pairs(kit, params, ("gradient_pair",), build=build)


def plan(kit, params: Params) -> list:
    """Every spec notebook 02 asks for (:func:`plan_resolved`), after what the choice of ``gradient_pair`` reads
    when it is ``"A,auto"``; a :class:`~mdrl_lib.plan.Pending` part until the chain is scored."""
    return common.pair_plan(kit, params, ("gradient_pair",), lambda resolved: plan_resolved(kit, resolved))


def plan_resolved(kit, params: Params) -> list:
    """Every spec notebook 02 asks for: the base and its scores, each domain's route activity, the three
    ablations and the shared set's activation-matched controls, three objective batches per domain and
    their gradients at the base, the gradients on shared routes, the :data:`AFTER` expert with three
    batches and gradients there for each domain of ``gradient_pair``, and the experts' updates on shared
    routes (the experts themselves when ``compare_experts`` is ``yes``)."""
    specs: list = [Base(), Scores(Base())]
    specs += [spec for by_domain in activity_specs(params).values() for spec in by_domain.values()]
    specs += list(ablation_specs(params).values()) + [matched_controls_spec(params)]
    specs += [objective_batch(params, n, r) for n in DOMAIN_NAMES for r in REPLICATES]
    specs += list(gradient_specs(params).values()) + [route_gradients_spec(params)]
    specs += [after_stage()] + [objective_batch(params, n, r, after_stage()) for n in params.gradient_domains
                                for r in REPLICATES]
    specs += list(after_gradient_specs(params).values())
    if params.compare_experts == "yes":
        specs += [spec for n, spec in expert_specs().items() if n != AFTER]  # the AFTER expert is planned above
    updates, _ = expert_updates_spec(kit, params)
    return specs + ([updates] if updates is not None else [])


def if_stored(kit, params: Params) -> list:
    """Specs notebook 02 reads only when they are already stored (``compare_experts`` ``auto``): the
    experts, and the comparison of those stored."""
    if params.compare_experts != "auto":
        return []
    updates, _ = expert_updates_spec(kit, params)
    return list(expert_specs().values()) + ([updates] if updates is not None else [])


def check_gradient_prompts(kit, params: Params) -> None:
    """A ``ValueError`` when ``gradient_prompts`` asks for more prompts than the smallest RL training split has."""
    smallest = min(len(kit.splits(n).train) for n in DOMAIN_NAMES)
    if params.gradient_prompts > smallest:
        raise ValueError(f"gradient_prompts: {params.gradient_prompts} asked, but the smallest RL training split "
                         f"has {smallest} prompts; ask for at most {smallest}")


# ------------------------------------------------------------------------------------------- 1. routes


def route_activity(kit, params: Params) -> dict[str, dict[str, RouteActivity]]:
    """positions -> domain -> the base's :class:`~mdrl_lib.routes.RouteActivity`, from the cached artifacts."""
    return {p: {n: kit.open(spec) for n, spec in by_domain.items()} for p, by_domain in activity_specs(params).items()}


def route_sets(activity: dict[str, RouteActivity], fraction: float) -> dict[str, set]:
    """Each domain's active route: its top ``fraction`` of MLP channels (``activity``: domain -> activity)."""
    from mdrl_lib.routes import active_routes

    return {n: active_routes(a.channels, fraction) for n, a in activity.items()}


def route_size_table(kit, params: Params, activity: dict, sets: dict) -> pd.DataFrame:
    """Per domain: prompts read, prompt and answer tokens averaged, and the route's size in channels."""
    import pandas as pd

    return pd.DataFrame({DOMAIN_TITLES[n]: {"prompts": len(kit.splits(n).train[:params.route_prompts]),
                                            "prompt tokens": activity["prompt"][n].tokens,
                                            "answer tokens": activity["answer"][n].tokens,
                                            "route size (channels)": len(sets["answer"][n])}
                         for n in DOMAIN_NAMES}).T


def overlap_table(sets: dict[str, dict[str, set]], units: int) -> pd.DataFrame:
    """Per positions and domain pair: shared channels, the count expected by chance, Jaccard index and p-value."""
    import pandas as pd

    from mdrl_lib.routes import pairwise_overlaps

    overlaps = pd.concat([pairwise_overlaps(sets[p], units).assign(positions=p) for p in POSITIONS])
    overlaps["pair"] = overlaps["a"].map(DOMAIN_TITLES) + "-" + overlaps["b"].map(DOMAIN_TITLES)
    return overlaps.set_index(["positions", "pair"])[["shared", "chance_shared", "jaccard", "p_value"]]


def overlap_explorer(activity: dict[str, dict[str, RouteActivity]]) -> Callable[[float, str], None]:
    """A function ``(fraction, positions)`` that draws the domains' route overlap (off the diagonal) for
    routes of the top ``fraction`` of channels: the figures of section 1 and its widget."""

    def explore_overlap(fraction: float, positions: str = "answer") -> None:
        import matplotlib.pyplot as plt

        from mdrl_lib import routes
        from mdrl_lib.plots import plot_domain_matrix

        matrix = routes.off_diagonal(routes.overlap_matrix(route_sets(activity[positions], fraction)))
        plot_domain_matrix(matrix, vmin=0, title=f"Active-route overlap, {positions} positions (top {fraction:.0%})",
                           colorbar_label="Jaccard index", note=f"chance level {routes.chance_jaccard(fraction):.3f}")
        plt.show()

    return explore_overlap


# ------------------------------------------------------------------------------------------- 2. ablations


@dataclass(frozen=True)
class AblationStudy:
    """Section 2's causal test, read from the cached :class:`~mdrl_lib.routes.AblationScores`.

    ``scores``: per item, columns ``checkpoint`` (``unablated`` or an ablated set's name), ``domain``,
    ``item``, ``score``; ``channel_sets``: name -> channels, in the order ablated (the shared set only when
    the pair shares a channel); ``controls``: ablated set -> its control's name in ``scores`` (for the
    shared set: the per-item mean over its activation-matched draws, on the pair's domains only);
    ``matched``: the :class:`~mdrl_lib.routes.MatchedControls` (``None`` without shared channels)."""

    scores: Any
    channel_sets: dict[str, tuple]
    controls: dict[str, str]
    only_name: str
    shared_name: str
    pair: tuple[str, str]
    only: tuple
    shared: tuple
    mode: str
    matched: Any = None

    def describe(self) -> str:
        """The sets' sizes, the shared set's channels by layer, and the mode, in one line."""
        by_layer: dict[str, int] = {}
        for layer, _ in self.shared:
            by_layer[layer] = by_layer.get(layer, 0) + 1
        by_layer = dict(sorted(by_layer.items(), key=lambda item: -item[1]))
        return (f"{self.only_name}: {len(self.only)} channels; {self.shared_name}: {len(self.shared)} channels "
                f"(by layer: {by_layer}); mode: {self.mode}")

    def changes(self) -> pd.DataFrame:
        """Per ablated set (and the shared set's matched control, on the pair's domains) and domain, the
        paired change against the unablated model (``change``, interval, p)."""
        import pandas as pd

        from mdrl_lib.domains.base import FRACTIONAL_DOMAINS
        from mdrl_lib.stats import paired_difference_table

        names = list(self.channel_sets) + [self.controls[self.shared_name]] * bool(self.shared)
        parts = []
        for name in names:
            domains = set(self.scores.loc[self.scores["checkpoint"] == name, "domain"])
            table = self.scores[self.scores["domain"].isin(domains)]
            parts.append(paired_difference_table(table, before="unablated", after=name,
                                                 kind=FRACTIONAL_DOMAINS).assign(ablated=name))
        return pd.concat(parts, ignore_index=True).rename(columns={"diff": "change"})

    def matched_draws(self) -> pd.DataFrame:
        """Per domain of the pair and matched draw: its mean score change against the unablated model, and the
        draw's mean activation over the shared set's (``activation ratio``)."""
        import pandas as pd

        if self.matched is None:
            return pd.DataFrame(columns=["domain", "draw", "change", "activation ratio"])
        base = self.scores[self.scores["checkpoint"] == "unablated"].groupby("domain")["score"].mean()
        means = self.matched.items.groupby(["domain", "draw"], as_index=False)["score"].mean()
        means["change"] = means["score"] - means["domain"].map(base)
        means["activation ratio"] = [self.matched.ratios[d][k] for d, k in zip(means["domain"], means["draw"])]
        return means.drop(columns="score")

    def contrasts(self, name: str, domains=None) -> list:
        """:func:`~mdrl_lib.claims.nb02.ablation_contrasts` of set ``name`` against its random control."""
        from mdrl_lib.claims.nb02 import ablation_contrasts

        return ablation_contrasts(self.scores, ablated=name, control=self.controls[name], unablated="unablated",
                                  domains=domains)

    def contrast_table(self) -> pd.DataFrame:
        """Per ablated set and domain: its change, its control's, their paired difference and its p-value."""
        import pandas as pd

        rows = [{"ablated": name, "control": self.controls[name], "domain": c.domain, "change": c.change,
                 "control change": c.control_change, "ablated - control": c.difference,
                 "p (ablated vs control)": c.p_value}
                for name in (self.only_name, self.shared_name) if name in self.channel_sets
                for c in self.contrasts(name, domains=self.pair if name == self.shared_name else None)]
        return pd.DataFrame(rows).set_index(["ablated", "domain"])


def ablation_study(kit, params: Params) -> AblationStudy:
    """Section 2's ablations with the unablated base, from the cached artifacts (:func:`ablation_specs`)."""
    import pandas as pd

    opened = {role: kit.open(spec) for role, spec in ablation_specs(params).items()}
    pair = opened["shared"].domains
    only_name, shared_name = f"{params.ablation_domain}-only", f"{pair[0]}+{pair[1]} shared"
    matched_name = f"activation-matched random, as many as {shared_name} (mean of draws)"
    names = {"only": only_name, "only control": f"random, as many as {only_name}", "shared": shared_name}
    roles = ["only", "only control"] + (["shared"] if opened["shared"].channels else [])
    per_item = [kit.item_results(Base()).assign(checkpoint="unablated")]
    per_item += [opened[role].items.assign(checkpoint=names[role]) for role in roles]
    matched = kit.open(matched_controls_spec(params)) if opened["shared"].channels else None
    if matched is not None:
        per_item.append(matched.items.groupby(["domain", "item"], as_index=False)["score"].mean()
                        .assign(checkpoint=matched_name))
    scores = pd.concat(per_item, ignore_index=True)[["checkpoint", "domain", "item", "score"]]
    return AblationStudy(scores=scores, channel_sets={names[r]: opened[r].channels for r in roles},
                         controls={only_name: names["only control"], shared_name: matched_name},
                         only_name=only_name, shared_name=shared_name, pair=pair, only=opened["only"].channels,
                         shared=opened["shared"].channels, mode=params.ablation_mode, matched=matched)


# ------------------------------------------------------------------------------------------- 3. gradients


WHERE = ("base", "after")  # where C3's gradients are measured: the base, or after the AFTER stage


def _where(where: str) -> str:
    if where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, got {where!r}")
    return where


def batch_table(kit, params: Params, where: str = "base") -> pd.DataFrame:
    """Per domain and batch: completions sampled, kept (verified-correct) and the acceptance rate, at the base
    or (``where="after"``) at the :data:`AFTER` expert."""
    import pandas as pd

    at = after_stage() if _where(where) == "after" else None
    domains = params.gradient_domains if at is not None else DOMAIN_NAMES
    rows = [{"domain": DOMAIN_TITLES[n], "batch": r, **kit.get(objective_batch(params, n, r, at)).metrics}
            for n in domains for r in REPLICATES]
    return pd.DataFrame(rows).set_index(["domain", "batch"])


def gradients(kit, params: Params, where: str = "base") -> dict:
    """(domain, replicate) -> the cached gradient by parameter name: every domain at the base, or
    (``where="after"``) ``gradient_pair``'s domains at the :data:`AFTER` expert."""
    specs = after_gradient_specs(params) if _where(where) == "after" else gradient_specs(params)
    return {k: kit.open(spec) for k, spec in specs.items()}


def gradient_geometry(kit, params: Params, where: str = "base", grads: dict | None = None) -> GradientGeometry:
    """Section 3's cosines, from the cached gradients (:func:`gradients`), the embeddings a module of their own."""
    from mdrl_lib.routes import GradientGeometry

    return GradientGeometry.of(grads if grads is not None else gradients(kit, params, where), REPLICATES,
                               embeddings=True)


def module_null(grads: dict, a: str, b: str, seed: int):
    """C3's sign-flip null of the most extreme module cosine of ``a`` and ``b`` over :data:`REPLICATES`
    (:func:`mdrl_lib.routes.module_cosine_null`, ``C3_NULL_DRAWS`` draws)."""
    from mdrl_lib.claims.nb02 import C3_NULL_DRAWS
    from mdrl_lib.routes import module_cosine_null

    return module_cosine_null([(grads[(a, r)], grads[(b, r)]) for r in REPLICATES], draws=C3_NULL_DRAWS, seed=seed)


def shared_prompt_caveats(kit, params: Params, pair: tuple[str, str]) -> list[str]:
    """A caveat per domain of ``pair`` whose batches must share prompts: each draws ``gradient_prompts`` of the
    domain's N training prompts, so two share at least 2 x prompts - N of them."""
    out = []
    for n in pair:
        total = len(kit.splits(n).train)
        least = 2 * params.gradient_prompts - total
        if least > params.gradient_prompts / 2:
            out.append(f"{n}'s batch replicates each draw {params.gradient_prompts} of its {total} training prompts, "
                       f"so any two share at least {least}: they differ mostly in their samples, and its noise "
                       f"floor overstates how far independent batches agree")
    return out


def pair_table(geometry: GradientGeometry) -> pd.DataFrame:
    """Per domain pair: the global cosine per batch, the noise floor, the cancellation, and the modules with
    the lowest and highest mean cosine."""
    import pandas as pd

    rows = []
    for (a, b), reps in geometry.comparisons.items():
        table = geometry.module_table(a, b)
        worst, best = table["cosine (mean)"].idxmin(), table["cosine (mean)"].idxmax()
        rows.append({"pair": f"{DOMAIN_TITLES[a]}-{DOMAIN_TITLES[b]}",
                     **{f"cosine, batch {r}": c.cosine for r, c in zip(geometry.replicates, reps)},
                     "noise floor": geometry.noise_floor(a, b), "cancellation": geometry.cancellation(a, b),
                     "most conflicting": worst, "its cosine": table.loc[worst, "cosine (mean)"],
                     "most synergistic": best, "its cosine ": table.loc[best, "cosine (mean)"]})
    return pd.DataFrame(rows).set_index("pair")


def module_bands(null) -> dict[str, float]:
    """Per module, the half-width of the band C3 counts as chance: the ``C3_NULL_LEVEL`` quantile of the null
    of the most extreme standardized module cosine times the module's null sd (``null``: :func:`module_null`)."""
    from mdrl_lib.claims.nb02 import C3_NULL_LEVEL

    return null.bands(C3_NULL_LEVEL)


def module_cosine_table(geometry: GradientGeometry, a: str, b: str, null) -> pd.DataFrame:
    """Per module of pair ``a``, ``b`` (the embeddings and ``other`` included): cosine and contribution (mean,
    min, max over batches), both domains' same-domain floors, the chance band and the max-adjusted p-value."""
    import pandas as pd

    from mdrl_lib.claims.nb02 import C3_NULL_LEVEL

    same_domain = pd.DataFrame({f"{DOMAIN_TITLES[n]} vs {DOMAIN_TITLES[n]} (noise floor)":
                                geometry.floors[n].modules.set_index("module")["cosine"] for n in (a, b)})
    same_domain[f"chance band (null of the max, {C3_NULL_LEVEL:.0%})"] = pd.Series(module_bands(null))
    same_domain["p (max-adjusted)"] = pd.Series(null.p_values())
    return geometry.module_table(a, b, every_module=True).round(4).join(same_domain.round(4))


def embedding_lines(geometry: GradientGeometry, a: str, b: str) -> str:
    """Per batch: the global cosine with and without the embeddings, and the embeddings' contribution."""
    from mdrl_lib.routes import EMBEDDINGS

    lines = []
    for r, c, without in zip(geometry.replicates, geometry.pair(a, b), geometry.global_cosines_without(a, b, EMBEDDINGS)):
        share = float(c.modules.set_index("module").loc[EMBEDDINGS, "contribution"])
        lines.append(f"batch {r}: global cosine {c.cosine:+.4f}, of which the embeddings contribute {share:+.4f}; "
                     f"without them {without:+.4f}")
    return "\n".join(lines)


def cancellation_lines(geometry: GradientGeometry, a: str, b: str) -> str:
    """Per batch: the global cosine as the sum of the positive and the negative module contributions."""
    return "\n".join(f"batch {r}: global cosine {c.cosine:+.4f} = positive contributions {c.positive:+.4f} "
                     f"+ negative {c.negative:+.4f}; cancellation {c.cancellation:.2f}"
                     for r, c in zip(geometry.replicates, geometry.pair(a, b)))


def route_gradient_table(kit, params: Params) -> pd.DataFrame:
    """Section 3b's table, from the cached :class:`~mdrl_lib.routes.GradientsOnRoutes`."""
    import pandas as pd

    rows = [{"pair": f"{DOMAIN_TITLES[row['a']]}-{DOMAIN_TITLES[row['b']]}", "shared channels": row["shared"],
             **{f"on shared channels, batch {r}": on for r, on in zip(REPLICATES, row["on"])},
             "noise floor there": row["floor"], "on random channels (batch 0)": row["random_mean"],
             "sd over draws": row["random_sd"], "elsewhere (mean)": row["elsewhere"]}
            for row in kit.open(route_gradients_spec(params))]
    return pd.DataFrame(rows).set_index("pair")


def expert_updates(kit, params: Params) -> tuple[pd.DataFrame | None, str]:
    """Section 4's table (from the cached :class:`~mdrl_lib.routes.UpdatesOnRoutes`), or ``None`` and why not."""
    import pandas as pd

    spec, skipped = expert_updates_spec(kit, params)
    if spec is None:
        return None, skipped
    rows = [{"pair": f"{DOMAIN_TITLES[row['a']]}-{DOMAIN_TITLES[row['b']]}", "shared channels": row["shared"],
             "update cosine on shared channels": row["on"], "on random channels": row["random_mean"],
             "sd over draws": row["random_sd"], "elsewhere": row["elsewhere"]} for row in kit.open(spec)]
    return pd.DataFrame(rows).set_index("pair"), ""


# ------------------------------------------------------------------------------------------- the claims


def c3_inputs(kit, params: Params, pair: tuple[str, str] | None = None, where: str = "base",
              grads: dict | None = None) -> dict:
    """:func:`~mdrl_lib.claims.nb02.check_c3`'s arguments for ``pair`` (default: ``gradient_pair``) at the base
    or (``where="after"``) at the :data:`AFTER` expert: every module's cosines (the embeddings included),
    the chance bands and p-values of the sign-flip null (:func:`module_null`), the global cosine without
    the embeddings and their contribution, and the shared-prompt caveats. ``grads``: the opened
    gradients (:func:`gradients`), to read them once for several pairs."""
    import numpy as np

    from mdrl_lib.claims.nb02 import C3_NULL_DRAWS
    from mdrl_lib.routes import EMBEDDINGS

    x, y = pair or params.gradient_domains
    grads = grads if grads is not None else gradients(kit, params, where)
    geometry = gradient_geometry(kit, params, where, grads)
    null = module_null(grads, x, y, params.seed)
    contribution = float(np.mean([c.modules.set_index("module").loc[EMBEDDINGS, "contribution"]
                                  for c in geometry.pair(x, y)]))
    return {"pair": (x, y), "global_cosines": [c.cosine for c in geometry.pair(x, y)],
            "noise_floor": geometry.noise_floor(x, y), "module_cosines": geometry.module_cosines(x, y, every_module=True),
            "module_floors": geometry.module_floors(x, y).to_dict(), "cancellation": geometry.cancellation(x, y),
            "module_bands": module_bands(null), "module_p": null.p_values(),
            "global_without_embeddings": geometry.global_cosines_without(x, y, EMBEDDINGS),
            "embedding_contribution": contribution, "where": AFTER if where == "after" else "base",
            "null_draws": C3_NULL_DRAWS, "caveats": shared_prompt_caveats(kit, params, (x, y))}


def c4_inputs(kit, params: Params) -> dict:
    """:func:`~mdrl_lib.claims.nb02.check_c4`'s arguments: the answer-position overlaps of every pair and the
    shared set's ablation against its control (``None`` when the pair shares no channel)."""
    from mdrl_lib import routes

    activity = {n: kit.open(spec) for n, spec in activity_specs(params)["answer"].items()}
    units = sum(routes.channel_sizes(activity[DOMAIN_NAMES[0]]).values())
    study = ablation_study(kit, params)
    contrasts = study.contrasts(study.shared_name, domains=study.pair) if study.shared else None
    return {"overlaps": routes.pairwise_overlaps(route_sets(activity, params.route_fraction), units),
            "chance": routes.chance_jaccard(params.route_fraction), "pair": study.pair,
            "shared_channels": len(study.shared), "contrasts": contrasts, "q": params.route_fraction,
            "activation_ratios": study.matched.ratios if study.matched is not None else None}

