"""The run directory's one owner: its files and atomic writer (`files`), its life from
creation to summary (`directory`), the metric recorder (`recorder`), `summary.json`
(`summary`) and the report a person reads (`report`)."""
