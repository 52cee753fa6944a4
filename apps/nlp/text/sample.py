"""A seeded generator of product and film reviews labelled positive or negative.

The reviews are built so that the words alone do not give the label away, and a model has to
read word order: negation with words in between ("was not at all bad"), contrast where the clause
after "but" / the main clause after "although" decides ("great screen but, to be fair, the
battery died"), and the same adverbs and adjectives on both sides. Neutral sentences of varying
number pad the reviews to different lengths. A small share of labels is flipped (annotator
noise), so no model reaches 100%. `write_reviews` writes the sample `prepare` reads.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from shared.io import generated_is_current, record_generated, write_table

PRODUCTS = {
    "items": [
        "phone",
        "laptop",
        "pair of headphones",
        "blender",
        "vacuum cleaner",
        "camera",
        "kettle",
        "backpack",
        "smartwatch",
        "coffee machine",
        "monitor",
        "speaker",
    ],
    "aspects": [
        "battery",
        "screen",
        "sound",
        "build quality",
        "price",
        "customer service",
        "delivery",
        "keyboard",
        "motor",
        "lens",
        "handle",
        "zipper",
        "charger",
        "packaging",
        "app",
        "manual",
    ],
    "neutral": [
        "I bought this {item} last month.",
        "It was a gift for my brother.",
        "I use the {item} every day at work.",
        "We ordered it online on a Monday.",
        "This is my second {item} from the same brand.",
        "It arrived in a plain box.",
        "I compared three models before buying.",
        "My partner chose the colour.",
    ],
}
FILMS = {
    "items": [
        "film",
        "movie",
        "thriller",
        "comedy",
        "documentary",
        "drama",
        "sequel",
        "animated film",
        "western",
        "musical",
    ],
    "aspects": [
        "plot",
        "acting",
        "soundtrack",
        "dialogue",
        "ending",
        "pacing",
        "cinematography",
        "cast",
        "script",
        "visual effects",
        "lead actor",
        "score",
        "editing",
        "humour",
    ],
    "neutral": [
        "We watched this {item} on a Sunday evening.",
        "I saw the {item} at the cinema.",
        "It runs for about two hours.",
        "A friend recommended the {item} to me.",
        "I had read the book before.",
        "We streamed it at home with the kids.",
        "The {item} came out last year.",
        "It is the director's third {item}.",
    ],
}
GOOD = [
    "good",
    "great",
    "excellent",
    "superb",
    "brilliant",
    "wonderful",
    "solid",
    "fantastic",
    "impressive",
    "lovely",
]
BAD = [
    "bad",
    "terrible",
    "awful",
    "poor",
    "dreadful",
    "disappointing",
    "weak",
    "boring",
    "mediocre",
    "cheap",
]
ADVERBS = ["", "", "really ", "quite ", "very ", "pretty ", "truly ", "rather "]
NEGATIONS = [
    "was not {adv}{adj}",
    "was not at all {adj}",
    "was not {adv}that {adj}",
    "wasn't {adv}{adj}",
    "was never {adv}{adj}",
    "was hardly {adj}",
    "was not {adj} in any way",
]
PLAIN = [
    "was {adv}{adj}",
    "is {adv}{adj}",
    "turned out {adv}{adj}",
    "felt {adv}{adj}",
    "seemed {adv}{adj}",
    "was {adv}{adj} overall",
]
FILLERS = [
    "",
    "",
    "",
    "honestly, ",
    "to be fair, ",
    "in the end, ",
    "if I am honest, ",
    "after a while, ",
    "on the whole, ",
    "frankly, ",
]
VERDICT_GOOD = [
    "I would buy it again.",
    "I recommend it.",
    "Worth every penny.",
    "Five stars from me.",
]
VERDICT_BAD = [
    "I would not buy it again.",
    "I do not recommend it.",
    "A waste of money.",
    "One star from me.",
]


def _clause(rng: np.random.Generator, domain: dict, positive: bool) -> str:
    """'the <aspect> <predicate>' with the requested sentiment, negated half of the time."""
    aspect = rng.choice(domain["aspects"])
    adv = rng.choice(ADVERBS)
    if rng.random() < 0.5:
        # Negation flips the adjective: "not bad" is praise, "not great" a complaint.
        adj = rng.choice(BAD if positive else GOOD)
        predicate = rng.choice(NEGATIONS).format(adv=adv, adj=adj)
    else:
        adj = rng.choice(GOOD if positive else BAD)
        predicate = rng.choice(PLAIN).format(adv=adv, adj=adj)
    return f"the {aspect} {predicate}"


def _review(rng: np.random.Generator, domain: dict, positive: bool) -> str:
    item = rng.choice(domain["items"])
    kind = rng.random()
    if kind < 0.3:
        core = _clause(rng, domain, positive)
    elif kind < 0.75:
        # The clause after "but" decides; the one before says the opposite.
        first, second = _clause(rng, domain, not positive), _clause(rng, domain, positive)
        core = f"{first} but {rng.choice(FILLERS)}{second}"
    else:
        # "although X, Y": the main clause Y decides, X concedes the opposite.
        concession, main = _clause(rng, domain, not positive), _clause(rng, domain, positive)
        core = f"although {concession}, {rng.choice(FILLERS)}{main}"
    sentences = [core[0].upper() + core[1:] + "."]
    for _ in range(rng.integers(0, 4)):
        position = rng.integers(0, len(sentences) + 1)
        sentences.insert(position, rng.choice(domain["neutral"]).format(item=item))
    if rng.random() < 0.2:
        # A verdict that repeats the label: easy words for every model, as in real reviews.
        sentences.append(rng.choice(VERDICT_GOOD if positive else VERDICT_BAD))
    return " ".join(sentences)


def generate_reviews(rows: int, seed: int, label_noise: float = 0.02) -> pd.DataFrame:
    """`rows` reviews: id, text, label (positive/negative) and domain (product/film)."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(rows):
        domain_name = "product" if rng.random() < 0.5 else "film"
        positive = bool(rng.random() < 0.5)
        text = _review(rng, PRODUCTS if domain_name == "product" else FILMS, positive)
        if rng.random() < label_noise:
            positive = not positive
        label = "positive" if positive else "negative"
        records.append((f"r{index:06d}", text, label, domain_name))
    return pd.DataFrame(records, columns=["id", "text", "label", "domain"])


def write_reviews(path: Path, rows: int, seed: int) -> None:
    """The seeded review sample (id, text, label, domain) at `path`, unless already current."""
    params = {"generator": "reviews-v1", "rows": rows, "seed": seed}
    if generated_is_current(path, params):
        return
    write_table(path, generate_reviews(rows, seed))
    record_generated(path, params)
    print(f"prepare: wrote {rows:,} generated reviews to {path}", flush=True)
