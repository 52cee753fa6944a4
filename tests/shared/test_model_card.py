from shared.model_card import metrics_table, write_model_card


def test_card_has_sections_and_a_table(tmp_path):
    table = metrics_table(
        {"net": {"auc": 0.91234, "cost": 12345.0}, "base": {"auc": 0.8}}, ["auc", "cost"]
    )
    assert table.splitlines() == [
        "| model | auc | cost |",
        "|---|---|---|",
        "| net | 0.9123 | 12,345 |",
        "| base | 0.8000 | - |",
    ]
    write_model_card(
        tmp_path / "card.md", "A model", {"Intended use": "Testing.", "Metrics": table}
    )
    text = (tmp_path / "card.md").read_text()
    assert text.startswith("# A model\n")
    assert text.index("## Intended use") < text.index("## Metrics")
