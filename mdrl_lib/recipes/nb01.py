"""Notebook ``01_sparse_edits``'s recipe: its parameters, what it asks the kit for (experts, the bf16 rate grid
and the cached analyses of :mod:`mdrl_lib.edits`), the tables it shows and its claim checks' inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mdrl_lib.config import ConfigError, parameter_declarations, parse_order
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, Scores, Spec, Stage

if TYPE_CHECKING:
    import pandas as pd

GRID_RUN = (("rl_precision", "bf16"),)  # the rate grid's run setting: its experts are stored in bf16


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 01's parameters: the top-neuron share, the second RL seed and the bf16 rate grid."""

    notebook: ClassVar[str] = "01_sparse_edits"

    top_fraction: float = option(0.1, "k: an expert's top neurons are its top k of MLP neurons by edit magnitude "
                                      "(the paper's 10%)", above=0.0, maximum=0.5)
    second_seed_domains: str = option("math", 'domains whose expert is trained again with RL seed 1 (C2\'s '
                                              'same-domain reference); "" for none, "all"')
    rate_grid: str = option("1e-5,1e-6", "learning rates of the bf16 grid, comma-separated (C1 where the paper "
                                              "measures it)", above=0.0, maximum=1.0, number_list=True)
    grid_steps: int = option(60, "GRPO steps of each expert of the rate grid (short: the grid is about rate and "
                                 "precision)", minimum=1, maximum=10**6)
    grid_domain: str = option("math", "the domain of the rate grid's experts", choices=DOMAIN_NAMES)

    def validate(self) -> None:
        if self.config.scale == "full":
            raise ConfigError("scale: notebook 01 compares weight files in the run directory, and at scale 'full' "
                              "the pretrained base lives in the Hugging Face cache, which it does not read yet; "
                              "valid here: toy")
        self.rates  # noqa: B018 (checks every rate)
        self.second_seeds  # noqa: B018

    @property
    def rates(self) -> tuple[float, ...]:
        """The grid's rates, each once, largest first (each checked as the run's ``rl_lr``)."""
        rl_lr = parameter_declarations()["rl_lr"]
        return tuple(sorted({rl_lr.check("rate_grid", float(p)) for p in self.rate_grid.split(",")}, reverse=True))

    @property
    def second_seeds(self) -> tuple[str, ...]:
        """The domains trained again with RL seed 1."""
        text = self.second_seed_domains.strip()
        if text in ("", "all"):
            return DOMAIN_NAMES if text else ()
        try:
            return parse_order(text)
        except ConfigError as error:
            raise ConfigError(f"second_seed_domains: {str(error).removeprefix('order: ')}") from None


def grid_config(params: Params):
    """The rate grid's run configuration: the run's, with :data:`GRID_RUN` (rl_precision is a run setting,
    not a stage's; the base's key covers no RL setting, so both configurations share one base)."""
    from mdrl_lib.config import RunConfig

    return RunConfig.from_params(**params.run_values(), **dict(GRID_RUN))


def grid_kit(params: Params):
    """The kit of the rate grid's run (:func:`grid_config`), on the same run directory."""
    from mdrl_lib.kit import open_kit

    return open_kit(grid_config(params))


def expert(domain: str, rl_seed: int = 0) -> Stage:
    """The single-domain expert: the run's GRPO stage on ``domain`` from the base."""
    return Stage(Base(), domain, rl_seed=rl_seed)


def grid_stage(params: Params, rate: float) -> Stage:
    """The rate grid's expert at ``rate`` (built by a kit whose run stores bf16 checkpoints: :data:`GRID_RUN`)."""
    return Stage(Base(), params.grid_domain, steps=params.grid_steps, lr=rate)


def seed_name(domain: str) -> str:
    """The name of ``domain``'s second-RL-seed expert in the C2 tables."""
    return f"{domain} (RL seed 1)"


def sparsity_spec(after: Spec):
    """C1's cached tables of ``after`` against the base."""
    from mdrl_lib.edits import EditSparsity

    return EditSparsity(Base(), after)


def control_spec(params: Params, after: Spec):
    """C1's cached tables of ``after``'s dense control against the base, seeded by the run's seed."""
    from mdrl_lib.edits import DenseControlSparsity

    return DenseControlSparsity(Base(), after, seed=params.config.seed)


def magnitudes_spec(after: Spec):
    """C2's cached neuron edit magnitudes of ``after`` against the base."""
    from mdrl_lib.edits import NeuronMagnitudes

    return NeuronMagnitudes(Base(), after)


def rounded_base():
    """The base's held-out results with its weights rounded to bf16: the grid's gains are measured from it."""
    from mdrl_lib.edits import RoundedScores

    return RoundedScores(Base(), "bf16")


def plan(kit, params: Params) -> list:
    """Every spec notebook 01 asks for: each expert, its scores, its sparsity tables, its dense control's and
    its neuron edit magnitudes; the RL-seed-1 experts and their magnitudes; the base's bf16-rounded scores;
    and the bf16 rate grid with its tables (entries ``(run overrides, spec)`` belong to the grid's run)."""
    specs: list = [Base(), Scores(Base()), rounded_base()]
    for name in DOMAIN_NAMES:
        stage = expert(name)
        specs += [stage, Scores(stage), sparsity_spec(stage), control_spec(params, stage), magnitudes_spec(stage)]
    for name in params.second_seeds:
        stage = expert(name, rl_seed=1)
        specs += [stage, Scores(stage), magnitudes_spec(stage)]
    for rate in params.rates:
        stage = grid_stage(params, rate)
        specs += [(GRID_RUN, s) for s in (stage, Scores(stage), sparsity_spec(stage), control_spec(params, stage))]
    return specs


# ---------------------------------------------------------------------------------- the notebook's tables


def held_out_scores(kit) -> pd.DataFrame:
    """Held-out score of the base and of each expert (rows) on every domain (columns, by title)."""
    import pandas as pd

    from mdrl_lib.domains.base import DOMAIN_TITLES

    scores = pd.DataFrame({"base": kit.scores_of(Base()).set_index("domain")["score"],
                           **{f"{DOMAIN_TITLES[d]} expert": kit.scores_of(expert(d)).set_index("domain")["score"]
                              for d in DOMAIN_NAMES}}).T
    scores.columns = [DOMAIN_TITLES[d] for d in scores.columns]
    return scores


def expert_gains(kit) -> dict[str, pd.Series]:
    """Each expert's held-out gain on its own domain over the base (:func:`mdrl_lib.edits.own_gain`)."""
    from mdrl_lib.edits import own_gain

    base_items = kit.item_results(Base())
    return {d: own_gain(base_items, kit.item_results(expert(d)), d) for d in DOMAIN_NAMES}


def sparsity_tables(kit) -> dict:
    """domain -> the cached C1 tables of its expert against the base (:class:`~mdrl_lib.edits.SparsityTables`)."""
    return {d: kit.open(sparsity_spec(expert(d))) for d in DOMAIN_NAMES}


def control_tables(kit, params: Params) -> dict:
    """domain -> the cached C1 tables of its expert's dense control against the base."""
    return {d: kit.open(control_spec(params, expert(d))) for d in DOMAIN_NAMES}


def rounding_gain(kit, params: Params) -> pd.Series:
    """What rounding the base to bf16 does to its held-out score on the grid's domain (paired)."""
    from mdrl_lib.edits import own_gain

    return own_gain(kit.item_results(Base()), kit.open(rounded_base()), params.grid_domain)


def grid_results(kit, params: Params) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The bf16 rate grid: (table indexed by rate, largest first: the unchanged shares of the fp32 master,
    the bf16 checkpoint and its dense control in bf16, the relative L2 of delta, the held-out gain over the
    bf16-rounded base with its p, the mean training reward of the first and last ten steps; the curves of
    :func:`mdrl_lib.plots.plot_unchanged_vs_rate`, columns rate, weights, share; its gains, columns rate,
    gain, ci_low, ci_high)."""
    import numpy as np
    import pandas as pd

    from mdrl_lib.edits import own_gain

    grid = grid_kit(params)
    base16_items = kit.open(rounded_base())
    rows, curves, gains = [], [], []
    for rate in params.rates:
        stage = grid_stage(params, rate)
        shares = grid.open(sparsity_spec(stage)).criterion().set_index("precision")
        control = grid.open(control_spec(params, stage)).criterion().set_index("precision").loc["bf16", "share"]
        gain = own_gain(base16_items, grid.item_results(stage), params.grid_domain)
        rewards = grid.get(stage).metrics["log"]["rewards"]
        rows.append({"rate": rate, "unchanged, fp32 master": shares.loc["fp32", "share"],
                     "unchanged, bf16 checkpoint": shares.loc["bf16", "share"],
                     "unchanged, dense control in bf16": control,
                     "relative L2 of δ (fp32)": shares.loc["fp32", "relative_l2"],
                     "held-out gain": gain.gain, "gain p": gain.p_value,
                     "reward, first 10 steps": float(np.mean(rewards[:10])),
                     "reward, last 10 steps": float(np.mean(rewards[-10:]))})
        for weights, share in (("fp32 master", shares.loc["fp32", "share"]),
                               ("bf16 checkpoint", shares.loc["bf16", "share"]), ("dense control, bf16", control)):
            curves.append({"rate": rate, "weights": weights, "share": share})
        gains.append({"rate": rate, "gain": gain.gain, "ci_low": gain.ci_low, "ci_high": gain.ci_high})
    return pd.DataFrame(rows).set_index("rate"), pd.DataFrame(curves), pd.DataFrame(gains)


def reference_pairs(params: Params) -> dict[str, list[tuple[str, str]]]:
    """C2's pairs by reference: every two domains, and each domain with its second RL seed."""
    from itertools import combinations

    return {"cross-domain": list(combinations(DOMAIN_NAMES, 2)),
            "same domain, two RL seeds": [(d, seed_name(d)) for d in params.second_seeds]}


def neuron_magnitudes(kit, params: Params) -> dict[str, dict]:
    """precision -> expert name (domain, or :func:`seed_name`) -> layer -> its neurons' edit magnitudes."""
    from mdrl_lib.edits import PRECISIONS

    opened = {d: kit.open(magnitudes_spec(expert(d))) for d in DOMAIN_NAMES}
    opened |= {seed_name(d): kit.open(magnitudes_spec(expert(d, rl_seed=1))) for d in params.second_seeds}
    return {p: {name: by_precision[p] for name, by_precision in opened.items()} for p in PRECISIONS}


def seed_scores(kit, params: Params) -> pd.DataFrame:
    """Each second-seed domain's held-out score on its own domain with RL seed 0 and 1 (one row)."""
    import pandas as pd

    from mdrl_lib.domains.base import DOMAIN_TITLES

    return pd.DataFrame({f"{DOMAIN_TITLES[d]}, RL seed {s}": {
        f"held-out {DOMAIN_TITLES[d]} score": kit.scores_of(expert(d, rl_seed=s)).set_index("domain").loc[d, "score"]}
        for d in params.second_seeds for s in (0, 1)})


# ---------------------------------------------------------------------------------- the claim checks' inputs


def default_regime(config) -> str:
    """The run's own training regime as C1 labels it: precision, rate, steps."""
    return f"{config.rl.precision}, lr {config.rl.lr:g}, {config.rl.steps} steps"


def c1_inputs(kit, params: Params, regime: str) -> dict:
    """:func:`~mdrl_lib.claims.nb01.check_c1`'s arguments for ``regime``: ``"paper"`` (the bf16 grid, one
    regime per rate) or ``"default"`` (the four experts at the run's settings, compared in its precision).
    Each expert comes with its dense control's unchanged share (``dense_share``) for the rounding caveat;
    every expert is RL seed 0 (``seeds`` 1)."""
    import pandas as pd

    if regime == "paper":
        table = grid_results(kit, params)[0]
        experts = pd.DataFrame([{"regime": f"bf16, lr {r:g}, {params.grid_steps} steps", "expert": params.grid_domain,
                                 "share": table.loc[r, "unchanged, bf16 checkpoint"],
                                 "gain": table.loc[r, "held-out gain"], "gain_p": table.loc[r, "gain p"],
                                 "dense_share": table.loc[r, "unchanged, dense control in bf16"]}
                                for r in params.rates])
        return {"experts": experts, "name": "paper-regime", "seeds": 1}
    if regime != "default":
        raise ValueError(f"unknown regime {regime!r}; valid: paper, default")
    label, precision = default_regime(kit.config), kit.config.rl.precision
    tables, gains, controls = sparsity_tables(kit), expert_gains(kit), control_tables(kit, params)
    experts = pd.DataFrame([{"regime": label, "expert": d,
                             "share": tables[d].criterion().set_index("precision").loc[precision, "share"],
                             "gain": gains[d].gain, "gain_p": gains[d].p_value,
                             "dense_share": controls[d].criterion().set_index("precision").loc[precision, "share"]}
                            for d in DOMAIN_NAMES])
    return {"experts": experts, "name": "default-regime", "seeds": 1}


def c2_inputs(kit, params: Params) -> dict:
    """:func:`~mdrl_lib.claims.nb01.check_c2`'s arguments: the top-k Jaccard of every two experts of
    different domains and of each domain's two RL seeds (fp32 magnitudes), and the random-set level."""
    from mdrl_lib.edits import overlap

    table = overlap(neuron_magnitudes(kit, params)["fp32"], reference_pairs(params), params.top_fraction)[1]
    cross = {f"{a}-{b}": v for a, b, v in table[table["reference"] == "cross-domain"][["a", "b", "jaccard"]].values}
    same = {a: v for a, v in table[table["reference"] != "cross-domain"][["a", "jaccard"]].values}
    return {"cross_domain": cross, "same_domain": same,
            "random_expectation": float(table["random_expectation"].iloc[0]), "fraction": params.top_fraction}
