"""Paper-style reproductions: each experiment runs its sweep on the built-in data, writes its tables and plot
under experiments/<name>/ beside the published numbers, and states whether the published finding held
(`python -m tl_research.experiments run NAME|all`, `report NAME`, `list`)."""
