"""The README's config tables are the key declarations of utils/config.py, rendered."""
from reco_api import config_docs


def test_readme_config_tables_match_the_declarations():
    readme = config_docs.README.read_text()
    assert readme.count("<!-- config-table: ") == len(config_docs.TABLES)
    assert config_docs.render(readme) == readme, (
        f"README.md's config tables differ from utils/config.py; regenerate them with: {config_docs.COMMAND}")


def test_a_table_row_shows_the_declaration():
    rows = config_docs.table(config_docs.TABLES["RecoConfig"]).splitlines()
    assert "| `n_imgs` | `50` | >= 1 | k, the number of retrieved images per category |" in rows
    assert any(row.startswith("| `crf_workers` | `n_workers` | >= 0, `null` |") for row in rows)
    assert any(row.startswith("| `imagenet_split` | `train` | `train`, `val` |") for row in rows)
    assert any(row.startswith("| `background.threshold` | `0.5` | 0 to 1 |") for row in rows)
