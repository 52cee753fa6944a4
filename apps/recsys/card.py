"""The recsys model card (model_card.md) and the summary `evaluate` prints."""

from apps.recsys.model import RETRIEVAL_K
from shared import leaderboard
from shared.model_card import metrics_table, write_model_card
from shared.run import RunDir

CARD_TITLE = "Recommender: model card"
RANKING = ("recall", "ndcg", "map", "hit_rate", "coverage")  # the retrieval table's metrics


def write_card(run: RunDir, report: dict, ks: list[int]) -> None:
    """The model card of an evaluated run, from its metrics report."""
    sections = {
        "Intended use": "Predicts a user's rating of an item and retrieves top-K items per user "
        "for candidate generation; unknown users get the most popular items, flagged.",
        "Data": data_text(report["data"]),
    }
    if report["failed_networks"]:
        sections["Failed networks"] = "\n".join(
            f"- `{name}` failed and is never served: {reason}"
            for name, reason in report["failed_networks"].items()
        )
    if "rating" in report["leaderboard"]:
        sections["Leaderboard: rating prediction (RMSE)"] = _rating_text(report)
    sections[f"Leaderboard: retrieval (Recall@{RETRIEVAL_K})"] = _retrieval_text(report)
    rows = {
        n: {f"{metric}@{k}": m[f"@{k}"][metric] for k in ks for metric in RANKING}
        for n, m in report["retrieval"].items()
    }
    if rows:
        columns = [f"{metric}@{k}" for k in ks for metric in RANKING]
        sections["Retrieval (test)"] = metrics_table(rows, columns) + (
            "\n\nEach user's earlier (training and validation) items are excluded from the "
            "ranking. Recall, NDCG and MAP come from keras-rs; MAP@K divides by all of the "
            "user's relevant held-out items (keras-rs's definition). Hit rate: share of users "
            "with a relevant item in the top K; coverage: share of the catalogue recommended "
            "to at least one user."
        )
    if report.get("ivf_index"):
        ivf = report["ivf_index"]
        sections["Approximate index (serve.index=ivf)"] = (
            f"An inverted-file index of {ivf['lists']} k-means lists, {ivf['probed']} scored per "
            f"user, finds {ivf[f'recall@{RETRIEVAL_K}_vs_brute_force']:.1%} of the brute-force "
            f"top {RETRIEVAL_K} on {ivf['users']:,} test users ({ivf['ivf_s']:.2f} s against "
            f"{ivf['brute_force_s']:.2f} s brute force: it pays off only on large catalogues)."
        )
    limits = (
        "Models know only the users and items seen in training; new users get popularity "
        "(within their stated genres when given), flagged; items with genres but no "
        "interaction get an item-tower embedding from the genres alone (serve.cold_items)."
    )
    if report["data"]["simulated"]:
        limits += " The sample data is generated; figures on it say nothing about a real catalogue."
    sections["Limits"] = limits
    write_model_card(run.card_path, CARD_TITLE, sections)


def _rating_text(report: dict) -> str:
    pairs = report["rating_pairs"]
    return leaderboard.to_markdown(report["leaderboard"]["rating"]) + (
        "\n\nPredictions are clipped to the training rating range. `surprise_svd` is the "
        "`surprise` package's SVD at its defaults (100 factors, 20 epochs), the standard row. "
        f"Measured on the {pairs['test_scored']:,} of {pairs['test_rows']:,} test "
        f"ratings whose user and item are in the training split "
        f"({pairs['test_user_or_item_not_in_training']:,} left out: no model knows them)."
    )


def _retrieval_text(report: dict) -> str:
    held = report["retrieval_held_out"]
    test = held["test"]
    return leaderboard.to_markdown(report["leaderboard"]["retrieval"]) + (
        f"\n\nRelevance: {held['relevance']}. {test['relevant']:,} of {test['held_out']:,} "
        f"held-out test interactions are relevant and measured ({test['user_not_in_training']:,}"
        f" with a user and {test['item_not_in_training_catalogue']:,} with an item not in "
        f"training, {test['rated_below_relevant_min_rating']:,} rated below the threshold). "
        "`item_knn`: cosine item-kNN (every neighbour) on the training interactions."
    )


def data_text(data: dict) -> str:
    """The model card's Data section: source, counts and both splits."""

    def split_text(counts: dict) -> str:
        return ", ".join(f"{name} {count:,}" for name, count in counts.items())

    given = data["test_source"] or (data["split_column"] and "the split column")
    holdout = "last in time" if data["retrieval_holdout"] == "time" else "seeded random"
    test = "the given test rows" if given else f"each user's {holdout} interactions"
    text = (
        f"Source `{data['source']}`: {data['rows']:,} interactions, {data['users']:,} users, "
        f"{data['items']:,} items"
    )
    if data["explicit_ratings"]:
        how = f"given ({given})" if given else "random"
        text += f", explicit ratings. Rating split ({how}): {split_text(data['rating_split'])}"
    else:
        text += ", implicit feedback (no ratings: retrieval only)"
    return text + (
        f". Retrieval split (test: {test}; validation: each user's {holdout} training "
        f"interactions): {split_text(data['retrieval_split'])}. The splits pass the leak checks."
    )


def relevance_text(min_rating: float | None) -> str:
    """What counts as a relevant held-out item, in words."""
    if min_rating is None:
        return "every held-out item is relevant"
    return f"held-out items rated at least {min_rating:g} are relevant; lower ones count as misses"


def print_summary(report: dict, ks: list[int]) -> None:
    """Test RMSE/MAE per rating model, Recall/NDCG at each K per retrieval model, failures."""
    for name, m in report["rating"].items():
        print(f"{name:<16} RMSE {m['rmse']:.4f}  MAE {m['mae']:.4f}")
    for name, m in report["retrieval"].items():
        cells = "  ".join(
            f"R@{k} {m[f'@{k}']['recall']:.4f} NDCG@{k} {m[f'@{k}']['ndcg']:.4f}" for k in ks
        )
        print(f"{name:<16} {cells}")
    for name, reason in report["failed_networks"].items():
        print(f"{name:<16} FAILED: {reason}")
