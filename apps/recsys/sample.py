"""Seeded generator of user-item ratings, written for this project: the app's sample data.

Users and items have latent factors; items belong to one to three genres and users lean towards
a few genres. Which items a user rates follows power-law item popularity times the user's
affinity for the item, and the rating itself is a global mean plus user and item biases plus
the factor match plus noise, rounded to 1..5. Each user rates over a span of days, so the
timestamps order every user's history (for the temporal split). The result is written in the
generic layout: ratings (user_id, item_id, rating, timestamp) and items (item_id, title, genres).
"""

import dataclasses
import time

import numpy as np
import pandas as pd

from shared.config import ConfigError, to_dict
from shared.io import generated_is_current, record_generated, write_table

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
_WORDS = [
    "Night",
    "River",
    "Last",
    "Silent",
    "Golden",
    "City",
    "Storm",
    "Garden",
    "Road",
    "Winter",
    "Secret",
    "Iron",
    "Blue",
    "Lost",
    "Star",
    "House",
    "Dream",
    "Shadow",
    "Summer",
    "Glass",
]


@dataclasses.dataclass
class SimulatorConfig:
    """Size and structure of the generated sample."""

    n_users: int = 1500  # users
    n_items: int = 800  # items (films)
    mean_ratings_per_user: float = 40.0  # average history length (log-normal, at least 5)
    factors: int = 8  # latent dimensions behind the ratings and the choices
    popularity_exponent: float = 0.8  # Zipf exponent of item popularity
    affinity: float = 4.0  # how strongly taste (not popularity) decides what a user rates
    taste: float = 0.7  # weight of the user-item match in the rating (in match standard deviations)
    noise: float = 0.5  # standard deviation of the rating noise
    seed: int = 0  # seeds every draw


def simulate_ratings(config: SimulatorConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings, items) frames drawn from `config`; the same config gives the same frames."""
    if config.n_users < 2 or config.n_items < 10:
        raise ValueError(
            f"need at least 2 users and 10 items, got {config.n_users} and {config.n_items}"
        )
    rng = np.random.default_rng(config.seed)
    genre_factors = rng.normal(0.0, 1.0, (len(GENRES), config.factors))
    item_genres, item_factors, popularity, item_bias = _draw_items(rng, config, genre_factors)
    user_factors, user_bias, counts = _draw_users(rng, config, genre_factors)
    affinity = user_factors @ item_factors.T  # [users, items]
    user_idx, item_idx = _choose(rng, config, affinity, popularity, counts)
    # Taste relative to the user's own choices: everyone picks what they like, but rates the
    # best matches of their history higher than the rest.
    match = affinity[user_idx, item_idx]
    match = match - (np.bincount(user_idx, match) / np.bincount(user_idx))[user_idx]
    match = match / max(match.std(), 1e-9)
    raw = (
        3.6
        + user_bias[user_idx]
        + item_bias[item_idx]
        + config.taste * match
        + rng.normal(0.0, config.noise, len(user_idx))
    )
    rating = np.clip(np.rint(raw), 1, 5).astype(np.int64)
    ratings = pd.DataFrame(
        {
            "user_id": (user_idx + 1).astype(np.int64),
            "item_id": (item_idx + 1).astype(np.int64),
            "rating": rating,
            "timestamp": _timestamps(rng, config.n_users, user_idx),
        }
    ).sort_values(["user_id", "timestamp"], ignore_index=True)
    return ratings, _item_frame(rng, item_genres)


def _draw_items(rng, config: SimulatorConfig, genre_factors: np.ndarray):
    """Each item's genres (multi-hot), genre-driven factors, popularity and rating bias."""
    n_items, d = config.n_items, config.factors
    item_genres = np.zeros((n_items, len(GENRES)), bool)
    primary = rng.integers(0, len(GENRES), n_items)
    item_genres[np.arange(n_items), primary] = True
    item_genres |= rng.random((n_items, len(GENRES))) < 0.08
    factors = item_genres @ genre_factors / item_genres.sum(1, keepdims=True)
    factors += rng.normal(0.0, 0.5, (n_items, d))
    factors /= np.sqrt(d)
    rank = rng.permutation(n_items) + 1
    popularity = rank ** -float(config.popularity_exponent)
    bias = rng.normal(0.0, 0.35, n_items) + 0.3 * np.log(popularity / popularity.mean()) / 3
    return item_genres, factors, popularity, bias


def _draw_users(rng, config: SimulatorConfig, genre_factors: np.ndarray):
    """Each user's taste (a mix of a few genres), rating bias and history length."""
    n_users, d = config.n_users, config.factors
    liked = rng.dirichlet(np.full(len(GENRES), 0.3), n_users)
    factors = liked @ genre_factors + rng.normal(0.0, 0.5, (n_users, d))
    factors /= np.sqrt(d)
    bias = rng.normal(0.0, 0.3, n_users)
    sigma = 0.8
    mu_log = np.log(config.mean_ratings_per_user) - sigma**2 / 2
    counts = np.clip(rng.lognormal(mu_log, sigma, n_users).astype(int), 5, config.n_items // 2)
    return factors, bias, counts


def _choose(rng, config: SimulatorConfig, affinity, popularity, counts):
    """(user index, item index) of every rating: which distinct items each user rates."""
    logits = np.log(popularity)[None, :] + config.affinity * affinity * np.sqrt(config.factors)
    users, items = [], []
    for u in range(config.n_users):
        # Gumbel top-k: sample `counts[u]` distinct items with probability ~ exp(logits).
        keys = logits[u] + rng.gumbel(size=config.n_items)
        chosen = np.argpartition(-keys, counts[u] - 1)[: counts[u]]
        users.append(np.full(len(chosen), u))
        items.append(chosen)
    return np.concatenate(users), np.concatenate(items)


def _timestamps(rng, n_users: int, user_idx: np.ndarray) -> np.ndarray:
    """Each user is active over a span of days from a start date; the order is random."""
    start = 880_000_000 + rng.integers(0, 200 * 86400, n_users)
    span = rng.integers(1, 120 * 86400, n_users)
    stamps = start[user_idx] + (rng.random(len(user_idx)) * span[user_idx]).astype(np.int64)
    return stamps.astype(np.int64)


def _item_frame(rng, item_genres: np.ndarray) -> pd.DataFrame:
    """item_id, a generated title with a year, and the pipe-separated genres."""
    n_items = len(item_genres)
    years = rng.integers(1950, 2000, n_items)
    titles = [
        f"{_WORDS[a]} {_WORDS[b]} ({y})"
        for a, b, y in zip(
            rng.integers(0, len(_WORDS), n_items),
            rng.integers(0, len(_WORDS), n_items),
            years,
            strict=True,
        )
    ]
    genres = ["|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in item_genres]
    return pd.DataFrame(
        {"item_id": np.arange(1, n_items + 1, dtype=np.int64), "title": titles, "genres": genres}
    )


def ensure_sample(path: str, items_path: str | None, simulator: SimulatorConfig) -> None:
    """Write the sample ratings to `path` (and its items to `items_path`) unless the files there
    were generated from this very `simulator` config."""
    wanted = to_dict(simulator)
    if generated_is_current(path, wanted):
        return
    start = time.perf_counter()
    try:
        ratings, items = simulate_ratings(simulator)
    except ValueError as exc:
        raise ConfigError(f"data.simulator: {exc}") from exc
    write_table(path, ratings)
    if items_path:
        write_table(items_path, items)
    record_generated(path, wanted)
    print(
        f"prepare: generated {len(ratings):,} ratings of {items.shape[0]:,} items -> {path} in "
        f"{time.perf_counter() - start:.1f}s",
        flush=True,
    )
