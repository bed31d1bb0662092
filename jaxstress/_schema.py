"""The scenario schema: every config key, its type, bounds, unit and natural scale.

A scenario file is TOML with the sections below. Fixed sections have a fixed set of keys (all required after
`extends` is resolved). Two sections hold named tables: `[regimes.<name>]` (one per regime, listed in
`regimes.names`) and `[holders.<name>]` (one per foreign official holder); their fields have neutral defaults.

Each field says how it is used: `kind` is the TOML type, `lo`/`hi` are bounds checked on load, `unit` is what the
number means and `scale` a natural unit of change (1bp for rates, $100bn for amounts, ...) used to rank
sensitivities. Numeric fields are leaves of the parameter pytree (drivers); strings, booleans and the integer
sizes are static.
"""

from __future__ import annotations

import dataclasses

MAX_INTENSITY = 1e4  # 1/year: the most a jump or regime-switch intensity may be (about 40 a business day)

BP = 1e-4


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str  # "float" | "int" | "bool" | "str" | "floats" | "ints" | "strs" | "matrix"
    unit: str = ""
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    scale: float = 1.0
    default: object = None  # only for fields of named tables (regimes, holders)
    static: bool = False  # numeric but not differentiable (sizes, grids)
    lo_open: bool = False
    date: bool = False  # a "str" holding a calendar date, YYYY-MM-DD (a TOML date is accepted and normalized)


def F(unit, doc, lo=None, hi=None, scale=1.0, default=None, lo_open=False):
    return Field("float", unit, doc, lo, hi, scale, default, lo_open=lo_open)


RATE = dict(scale=BP)
SECTIONS: dict[str, dict[str, Field]] = {
    "scenario": {
        "name": Field("str", doc="short name of the scenario"),
        "description": Field("str", doc="one line shown by `jaxstress scenarios`"),
        "portfolio": Field("str", doc="shipped portfolio name or path to a portfolio TOML"),
        "start_date": Field("str", doc="calendar date of t=0 (ISO), used to overlay history", date=True),
    },
    "simulation": {
        "horizon": Field("float", "years", "simulated horizon", 1 / 252, 30.0, static=True),
        "steps_per_year": Field("int", "steps/year", "time steps per year (252 = business days)", 1, 100000,
                                static=True),
        "report_days": Field("ints", "steps", "reporting dates in steps (business days); the horizon is added. "
                             "Past the horizon: an error, unless a later file or --horizon shortened it (then left "
                             "out)", 0,
                             static=True),
    },
    "curve": {
        "k": F("1/year", "short-rate loading decay in B(m)", 1e-3, 20.0, 0.01, lo_open=True),
        "kc": F("1/year", "policy-path hump decay in C(m)", 1e-3, 20.0, 0.01, lo_open=True),
        "mu": F("years", "term-premium loading scale in G(m)", 1e-2, 100.0, 0.1, lo_open=True),
        "maturities": Field("floats", "years", "reporting maturity grid (increasing; must contain 2, 10 and 30)", 1e-3,
                            100.0, static=True),
    },
    "initial": {
        "r": F("decimal", "short rate (3-month yield) at t=0", -0.05, 0.3, **RATE),
        "pi": F("decimal", "long-run inflation expectations (10y breakeven) at t=0", -0.05, 0.3, **RATE),
        "tau": F("decimal", "10y term premium (ACM) at t=0", -0.1, 0.1, **RATE),
        "r_star": F("decimal", "neutral real rate (latent) at t=0", -0.1, 0.2, **RATE),
        "p": F("decimal", "policy-path factor (latent) at t=0", -0.2, 0.2, **RATE),
        "basis_bp": F("bp", "cash-futures basis at t=0", -200, 500, 1.0),
        "vol_10y": F("decimal/sqrt(year)", "realized 10y yield volatility at t=0", 1e-4, 0.2, 0.001, lo_open=True),
        "dollar_index": F("index", "dollar index level at t=0", 1.0, 1000.0, 1.0),
    },
    "short_rate": {
        "k": F("1/year", "speed toward the reaction-function target", 0.0, 50.0, 0.1),
        "sigma": F("decimal/sqrt(year)", "short-rate volatility", 0.0, 0.2, **RATE),
        "phi_pi": F("", "reaction to inflation expectations above target", -5.0, 5.0, 0.1),
        "pi_star": F("decimal", "inflation-expectations target", -0.05, 0.2, **RATE),
        "phi_stress": F("decimal", "rate cut per unit of market dysfunction", 0.0, 0.2, **RATE),
    },
    "neutral_rate": {
        "k": F("1/year", "mean reversion of r_star", 0.0, 10.0, 0.01),
        "mean": F("decimal", "long-run r_star", -0.05, 0.1, **RATE),
        "sigma": F("decimal/sqrt(year)", "r_star volatility", 0.0, 0.1, **RATE),
    },
    "policy_path": {
        "k": F("1/year", "mean reversion of the policy-path factor", 0.0, 50.0, 0.1),
        "mean": F("decimal", "long-run level of the policy-path factor", -0.2, 0.2, **RATE),
        "sigma": F("decimal/sqrt(year)", "policy-path volatility", 0.0, 0.2, **RATE),
        "phi_gap": F("", "share of the gap (target - r) priced into the path", -5.0, 5.0, 0.1),
        "phi_stress": F("decimal", "cuts priced per unit of dysfunction", 0.0, 0.2, **RATE),
    },
    "inflation": {
        "k": F("1/year", "mean reversion of inflation expectations", 0.0, 50.0, 0.1),
        "mean": F("decimal", "long-run inflation expectations (calm regime)", -0.05, 0.2, **RATE),
        "pass_through": F("", "expectations per unit of effective tariff rate", -2.0, 2.0, 0.01),
        "sigma": F("decimal/sqrt(year)", "volatility of inflation expectations", 0.0, 0.2, **RATE),
    },
    "term_premium": {
        "k": F("1/year", "mean reversion of the fundamental term premium", 0.0, 50.0, 0.1),
        "mean": F("decimal", "long-run fundamental term premium (calm regime)", -0.1, 0.1, **RATE),
        "sigma": F("decimal/sqrt(year)", "term-premium volatility", 0.0, 0.2, **RATE),
    },
    "impact": {
        "depth": F("$bn", "market depth: net flow of one depth moves the premium by lambda0", 1.0, 1e6, 100.0),
        "lambda0": F("decimal", "transient premium per depth of net flow", 0.0, 1.0, **RATE),
        "rho": F("1/year", "decay rate of the transient flow impact", 0.0, 1000.0, 1.0),
        "convexity": F("", "extra impact per unit of dealer load above capacity", 0.0, 100.0, 0.1),
        "stock_bp_per_tn": F("bp per $tn", "persistent premium per $tn of cumulative net private supply", -500, 500,
                             1.0),
    },
    "dealers": {
        "capacity": F("$bn", "balance sheet dealers can use to absorb net sales", 1.0, 1e6, 100.0, lo_open=True),
        "distribute_rate": F("1/year", "speed at which dealers place inventory with end investors", 0.0, 1000.0, 1.0),
    },
    "issuance": {
        "deficit": F("$bn/year", "net marketable issuance (deficit financing)", -1e5, 1e5, 100.0),
        "absorption": F("$bn/year", "net supply absorbed by end investors without a price change", -1e5, 1e5, 100.0),
    },
    "debt": {
        "amounts": Field("floats", "$bn", "marketable debt by maturity bucket", 0.0, scale=100.0),
        "maturities": Field("floats", "years", "average maturity of each bucket (sets its rollover rate)", 1e-3,
                            static=True),
        "coupons": Field("floats", "decimal", "average coupon of each bucket at t=0", -0.05, 0.3, scale=BP),
    },
    "fed": {
        "backstop": Field("bool", doc="whether the Fed buys Treasuries when dysfunction passes the threshold"),
        "max_purchases": F("$bn/year", "purchase rate at full activation", 0.0, 1e5, 100.0),
        "threshold": F("", "dysfunction level at which purchases are half on", 0.0, 100.0, 0.1),
        "width": F("", "smoothing width of the activation (0 = hard rule)", 0.0, 100.0, 0.1),
        "w_basis": F("per 10bp", "dysfunction weight of basis widening (per 10bp above its initial level)",
                     0.0, 100.0, 0.1),
        "w_move": F("per 25bp", "dysfunction weight of the recent 10y rise (per 25bp above its 5-day average)",
                    0.0, 100.0, 0.1),
        "w_vol": F("", "dysfunction weight of realized-vol increase (relative to the initial vol)", 0.0, 100.0, 0.1),
        "srf": Field("bool", doc="whether the standing repo facility caps the repo haircut"),
        "srf_cap": F("decimal", "haircut cap under the standing repo facility", 0.0, 1.0, 0.001),
    },
    "basis_funds": {
        "position": F("$bn", "long cash Treasuries held against short futures at t=0", 0.0, 1e5, 100.0),
        "leverage": F("x", "position / equity at t=0", 1.0, 1000.0, 1.0),
        "haircut0": F("decimal", "repo haircut at risk appetite 1", 0.0, 1.0, 0.001),
        "haircut_vol": F("decimal per unit vol", "haircut added per unit of annualized 10y vol", 0.0, 100.0, 0.1),
        "carry": F("decimal/year", "return on position from carry (basis convergence and repo spread)", -0.1, 0.1,
                   **RATE),
        "duration": F("years", "duration of the basis exposure: equity lost per bp of basis per $ of position",
                      0.0, 50.0, 1.0),
        "k": F("1/year", "mean reversion of the basis", 0.0, 1000.0, 1.0),
        "mean_bp": F("bp", "long-run basis", -200, 500, 1.0),
        "sigma_bp": F("bp/sqrt(year)", "basis volatility", 0.0, 1000.0, 1.0),
        "impact_bp_per_100bn": F("bp per $100bn", "basis widening per $100bn of forced sales", 0.0, 1000.0, 1.0),
        "relever": F("1/year", "speed of rebuilding positions toward the initial leverage", 0.0, 1000.0, 1.0),
        "width": F("$bn", "smoothing width of forced deleveraging (0 = hard rule)", 0.0, 1e4, 1.0),
        "vol_halflife_days": F("steps", "half-life of the EWMA of squared 10y changes", 0.5, 1e4, 1.0),
    },
    "vol_funds": {
        "holdings": F("$bn", "Treasuries held by volatility-targeting and risk-parity funds", 0.0, 1e5, 100.0),
        "target_vol": F("decimal/sqrt(year)", "realized 10y vol at which holdings are at their t=0 size",
                        1e-4, 1.0, 0.001, lo_open=True),
        "speed": F("1/year", "rebalancing speed toward target holdings", 0.0, 1000.0, 1.0),
    },
    "equity": {
        "mu": F("decimal/year", "equity drift", -1.0, 1.0, 0.01),
        "sigma": F("decimal/sqrt(year)", "equity volatility", 0.0, 2.0, 0.01),
        "tp_beta": F("", "log-price change per unit change of the term premium (discount-rate channel)", -100, 100,
                     1.0),
    },
    "dollar": {
        "sigma": F("decimal/sqrt(year)", "dollar volatility", 0.0, 1.0, 0.01),
        "rate_beta": F("", "log-dollar change per unit change of the 2y yield", -100, 100, 1.0),
    },
    "mortgage": {
        "spread": F("decimal", "30y mortgage rate minus 10y yield in calm markets", -0.05, 0.1, **RATE),
        "stress_spread": F("decimal", "extra spread per unit of dysfunction", 0.0, 0.1, **RATE),
    },
    "regimes": {
        "names": Field("strs", doc="regime names, in generator order"),
        "initial": Field("str", doc="regime at t=0"),
        "generator": Field("matrix", "1/year", "transition intensities (rows sum to zero; off-diagonal entries in "
                           "[0, 1e4])", scale=1.0),
    },
}

CORRELATED_SHOCKS = ("short_rate", "inflation", "term_premium", "equity", "dollar")

REGIME_FIELDS: dict[str, Field] = {
    "tariff": F("decimal", "effective tariff rate", 0.0, 5.0, 0.01, default=0.0),
    "pi_shift": F("decimal", "shift of the inflation-expectations target", -0.1, 0.1, default=0.0, **RATE),
    "pi_vol_mult": F("x", "multiplier on inflation-expectations volatility", 0.0, 100.0, 0.1, default=1.0),
    "tau_shift": F("decimal", "shift of the term-premium target", -0.1, 0.1, default=0.0, **RATE),
    "tau_vol_mult": F("x", "multiplier on term-premium volatility", 0.0, 100.0, 0.1, default=1.0),
    "jump_intensity": F("1/year", "intensity of announcement jumps", 0.0, MAX_INTENSITY, 1.0, default=0.0),
    "jump_pi_mean": F("decimal", "mean jump of inflation expectations", -0.1, 0.1, default=0.0, **RATE),
    "jump_pi_sd": F("decimal", "sd of the inflation-expectations jump", 0.0, 0.1, default=0.0, **RATE),
    "jump_tau_mean": F("decimal", "mean jump of the term premium", -0.1, 0.1, default=0.0, **RATE),
    "jump_tau_sd": F("decimal", "sd of the term-premium jump", 0.0, 0.1, default=0.0, **RATE),
    "foreign_selling": F("x", "multiplier on each holder's sell_rate", 0.0, 100.0, 0.1, default=0.0),
    "risk": F("x", "haircut multiplier (risk appetite; 1 = normal)", 0.0, 100.0, 0.1, default=1.0),
    "equity_drift": F("decimal/year", "extra equity drift", -10.0, 10.0, 0.01, default=0.0),
    "equity_vol_mult": F("x", "multiplier on equity volatility", 0.0, 100.0, 0.1, default=1.0),
    "dollar_drift": F("decimal/year", "dollar drift ('sell America' when negative)", -10.0, 10.0, 0.01, default=0.0),
    "deficit_mult": F("x", "multiplier on issuance.deficit", 0.0, 100.0, 0.1, default=1.0),
    "absorption_mult": F("x", "multiplier on issuance.absorption (buyer strike < 1)", 0.0, 100.0, 0.1, default=1.0),
    "correlation": Field("matrix", "", "correlation of the shocks to " + ", ".join(CORRELATED_SHOCKS),
                         default=None, scale=0.1),
}

HOLDER_FIELDS: dict[str, Field] = {
    "holdings": F("$bn", "Treasury holdings at t=0", 0.0, 1e5, 100.0, default=0.0),
    "sell_rate": F("1/year", "share of holdings sold per year at a regime foreign_selling of 1", 0.0, 100.0, 0.01,
                   default=0.0),
    "procyclical_rates": F("1/year per 100bp", "extra selling per 100bp rise of the 10y", 0.0, 100.0, 0.01,
                           default=0.0),
    "procyclical_dollar": F("1/year per 10%", "extra selling per 10% fall of the dollar", 0.0, 100.0, 0.01,
                            default=0.0),
    "fima_share": F("", "share of regime and pro-cyclical selling replaced by FIMA repo", 0.0, 1.0, 0.1, default=0.0),
    "program_total": F("$bn", "scheduled liquidation program, total", 0.0, 1e5, 100.0, default=0.0),
    "program_start": F("years", "program start", 0.0, 100.0, 1 / 12, default=0.0),
    "program_months": F("months", "program length", 0.01, 1200.0, 1.0, default=12.0, lo_open=True),
}

DYNAMIC_TABLES = {"regimes": REGIME_FIELDS, "holders": HOLDER_FIELDS}

# What makes a new named table (one its base scenario does not have) mean something. A holder is scaled by its
# holdings (default 0: every rate is a share of them), so a new holder must give them; a typo'd name would otherwise
# be a silent, empty new holder. A regime is defined by its place in regimes.names and the generator, and its
# fields' defaults are the neutral regime, so a new regime needs no field but must be listed in regimes.names.
NEW_ENTRY_FIELDS: dict[str, tuple[str, ...]] = {"regimes": (), "holders": ("holdings",)}
