"""RLlib experiment configs: one experiment per file (`build_config()`, `STOP`), plus the Tune
search spaces in `search_spaces`."""
