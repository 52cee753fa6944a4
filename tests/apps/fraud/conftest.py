"""The fraud tests' shared pieces: one trained and evaluated smoke run for the whole session,
and tiny files in exactly the layouts the app reads (a generic transactions table, the
credit-card sample as pandas re-saved it, Statlog German credit as UCI publishes it)."""

import numpy as np
import pandas as pd
import pytest

from shared.cli import main

SMOKE = "apps/fraud/configs/smoke.yaml"


def cli(*args) -> int:
    return main(["fraud", *args])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(root, CLI arguments) of a smoke run prepared, trained and evaluated under `root`."""
    root = tmp_path_factory.mktemp("fraud")
    sets = ["--config", SMOKE, "--set", f"run.root={root / 'runs'}"]
    sets += ["--set", f"data.path={root / 'smoke.parquet'}"]
    assert cli("prepare", *sets) == 0
    assert cli("train", *sets) == 0
    assert cli("evaluate", *sets) == 0
    return root, sets


def generic_frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tx": [f"t{i}" for i in range(n)],
            "when": pd.date_range("2026-01-01", periods=n, freq="37min").strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "customer": rng.choice(["c1", "c2", "c3"], n),
            "value": rng.lognormal(3, 1, n).round(2),
            "shop_type": rng.choice(["food", "travel"], n),
            "risk_score": rng.normal(size=n),
            "fraud": (np.arange(n) % 10 == 0).astype(int),
        }
    )


def write_creditcard_sample(path, n_normal=30, n_fraud=12):
    """The MANIFEST 5a layout: header `,Time,V1..V28,Amount,Class`, a leading unnamed pandas
    index 0..n-1, normal rows first and then every fraud, so the index encodes the label."""
    rng = np.random.default_rng(5)
    n = n_normal + n_fraud
    frame = pd.DataFrame(
        {
            "Time": rng.uniform(0, 172_000, n).round(),
            **{f"V{i}": rng.normal(size=n) for i in range(1, 29)},
            "Amount": rng.uniform(0, 300, n).round(2),
            "Class": [0] * n_normal + [1] * n_fraud,
        }
    )
    frame.to_csv(path)  # pandas writes its index as a first column with an empty header
    assert path.read_text().startswith(",Time,V1,")
    return frame


STATLOG_NAMES = [
    "checking",
    "duration",
    "history",
    "purpose",
    "credit_amount",
    "savings",
    "employment",
    "installment_rate",
    "personal_status",
    "debtors",
    "residence",
    "property",
    "age",
    "plans",
    "housing",
    "credits",
    "job",
    "liable",
    "telephone",
    "foreign",
    "class",
]
STATLOG_CODES = {
    "checking": ["A11", "A12", "A13", "A14"],
    "history": ["A30", "A31", "A32", "A33", "A34"],
    "purpose": ["A40", "A41", "A42", "A43", "A46", "A49", "A410"],
    "savings": ["A61", "A62", "A63", "A64", "A65"],
    "employment": ["A71", "A72", "A73", "A74", "A75"],
    "personal_status": ["A91", "A92", "A93", "A94"],
    "debtors": ["A101", "A102", "A103"],
    "property": ["A121", "A122", "A123", "A124"],
    "plans": ["A141", "A142", "A143"],
    "housing": ["A151", "A152", "A153"],
    "job": ["A171", "A172", "A173", "A174"],
    "telephone": ["A191", "A192"],
    "foreign": ["A201", "A202"],
}


def write_statlog_german(path, n=240, seed=0):
    """The MANIFEST 5b layout: space-separated, no header, 20 attributes (7 numeric, 13 coded
    A11...) and the class, 1 = good, 2 = bad; bad credit follows the checking account."""
    rng = np.random.default_rng(seed)
    columns = {name: rng.choice(codes, n) for name, codes in STATLOG_CODES.items()}
    columns |= {
        "duration": rng.integers(4, 72, n),
        "credit_amount": rng.integers(250, 18_000, n),
        "installment_rate": rng.integers(1, 5, n),
        "residence": rng.integers(1, 5, n),
        "age": rng.integers(19, 75, n),
        "credits": rng.integers(1, 5, n),
        "liable": rng.integers(1, 3, n),
    }
    risk = np.isin(columns["checking"], ["A11", "A12"]) * 0.45 + 0.1
    columns["class"] = np.where(rng.uniform(size=n) < risk, 2, 1)
    lines = [" ".join(str(columns[c][i]) for c in STATLOG_NAMES) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return columns
