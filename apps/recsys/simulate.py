"""Seeded generator of user-item ratings, written for this project.

Users and items have latent factors; items belong to one to three genres and users lean towards
a few genres. Which items a user rates follows power-law item popularity times the user's
affinity for the item, and the rating itself is a global mean plus user and item biases plus
the factor match plus noise, rounded to 1..5. Each user rates over a span of days, so the
timestamps order every user's history (for the temporal split). The result is written in the
generic layout: ratings (user_id, item_id, rating, timestamp) and items (item_id, title, genres).
"""

import dataclasses

import numpy as np
import pandas as pd

GENRES = [
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
_WORDS = [
    "Night", "River", "Last", "Silent", "Golden", "City", "Storm", "Garden", "Road", "Winter",
    "Secret", "Iron", "Blue", "Lost", "Star", "House", "Dream", "Shadow", "Summer", "Glass",
]  # fmt: skip


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
    n_users, n_items, d = config.n_users, config.n_items, config.factors
    n_genres = len(GENRES)

    # Items: genres, a genre-driven factor, popularity.
    genre_factors = rng.normal(0.0, 1.0, (n_genres, d))
    item_genres = np.zeros((n_items, n_genres), bool)
    primary = rng.integers(0, n_genres, n_items)
    item_genres[np.arange(n_items), primary] = True
    extra = rng.random((n_items, n_genres)) < 0.08
    item_genres |= extra
    item_factors = item_genres @ genre_factors / item_genres.sum(1, keepdims=True)
    item_factors += rng.normal(0.0, 0.5, (n_items, d))
    item_factors /= np.sqrt(d)
    rank = rng.permutation(n_items) + 1
    popularity = rank ** -float(config.popularity_exponent)
    item_bias = rng.normal(0.0, 0.35, n_items) + 0.3 * np.log(popularity / popularity.mean()) / 3

    # Users: taste as a mix of a few genres, a bias, an activity level.
    liked = rng.dirichlet(np.full(n_genres, 0.3), n_users)
    user_factors = liked @ genre_factors + rng.normal(0.0, 0.5, (n_users, d))
    user_factors /= np.sqrt(d)
    user_bias = rng.normal(0.0, 0.3, n_users)
    sigma = 0.8
    mu_log = np.log(config.mean_ratings_per_user) - sigma**2 / 2
    counts = np.clip(rng.lognormal(mu_log, sigma, n_users).astype(int), 5, n_items // 2)

    affinity = user_factors @ item_factors.T  # [users, items]
    logits = np.log(popularity)[None, :] + config.affinity * affinity * np.sqrt(d)
    users, items = [], []
    for u in range(n_users):
        # Gumbel top-k: sample `counts[u]` distinct items with probability ~ exp(logits).
        keys = logits[u] + rng.gumbel(size=n_items)
        chosen = np.argpartition(-keys, counts[u] - 1)[: counts[u]]
        users.append(np.full(len(chosen), u))
        items.append(chosen)
    user_idx, item_idx = np.concatenate(users), np.concatenate(items)
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

    # Timestamps: each user is active over a span of days from a start date; order is random.
    start = 880_000_000 + rng.integers(0, 200 * 86400, n_users)
    span = rng.integers(1, 120 * 86400, n_users)
    stamps = start[user_idx] + (rng.random(len(user_idx)) * span[user_idx]).astype(np.int64)

    ratings = pd.DataFrame(
        {
            "user_id": (user_idx + 1).astype(np.int64),
            "item_id": (item_idx + 1).astype(np.int64),
            "rating": rating,
            "timestamp": stamps.astype(np.int64),
        }
    ).sort_values(["user_id", "timestamp"], ignore_index=True)
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
    items_frame = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1, dtype=np.int64),
            "title": titles,
            "genres": [
                "|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in item_genres
            ],
        }
    )
    return ratings, items_frame
