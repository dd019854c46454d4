"""Known models that `edged models fetch` can download, and where fetched models live."""
